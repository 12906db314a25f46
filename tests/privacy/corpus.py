"""The privacy corpus: must-catch and must-keep cases per category, from public sources.

Every value comes from a published source, named per block: the card networks' and payment
processors' documented test cards, HMRC's specimen NINO, the SWIFT IBAN registry's examples,
python-stdnum's own doctest vectors, libphonenumber's example numbers, RFC 5737/3849
documentation addresses, AWS's and jwt.io's documented sample credentials. Field names are those
of real systems (Shopify, Stripe, Salesforce, HubSpot, Mailchimp, WordPress, Magento, Auth0,
Zendesk, Django) and the words real forms use in EN, DE, FR, ES, IT, PT, NL and SV; they were
written down from those sources, not from the policy's key list.

A ``catch`` case passes when none of its ``secrets`` (nor their digits alone) appears anywhere
in the sanitized JSON; a ``keep`` case passes when every attribute comes out unchanged.
``python -m tests.privacy.corpus`` prints the counts per category.

Secret-shaped strings are built by concatenation so that no scanner flags this file.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import phonenumbers

from cioguard.privacy.policy import default_policy
from cioguard.privacy.sanitizer import Sanitizer


@dataclass(frozen=True)
class Case:
    category: str
    expect: Literal["catch", "keep"]
    attributes: dict[str, Any]
    secrets: tuple[str, ...] = ()  # catch: what must not survive (default: every string leaf)


def catch(category: str, attributes: dict[str, Any], *secrets: str) -> Case:
    return Case(category, "catch", attributes, secrets)


def keep(category: str, attributes: dict[str, Any]) -> Case:
    return Case(category, "keep", attributes)


# -- payment cards: Visa/Mastercard/Amex/Discover/JCB/Diners/UnionPay test cards as published by
# Stripe ("Testing" docs), PayPal/Braintree and Adyen test card lists ---------------------------
TEST_CARDS = [
    "4111111111111111",
    "4012888888881881",
    "4242424242424242",
    "4000056655665556",
    "5555555555554444",
    "5105105105105100",
    "2223003122003222",
    "5200828282828210",
    "378282246310005",
    "371449635398431",
    "6011111111111117",
    "6011000990139424",
    "3530111333300000",
    "3566002020360505",
    "30569309025904",
    "38520000023237",
    "6200000000000005",
    "4222222222222",
]


def _grouped(card: str, sep: str) -> str:
    if len(card) == 15:
        return sep.join((card[:4], card[4:10], card[10:]))
    if len(card) == 14:
        return sep.join((card[:4], card[4:10], card[10:]))
    return sep.join(card[i : i + 4] for i in range(0, len(card), 4))


CARDS: list[Case] = []
for _card in TEST_CARDS:
    CARDS += [
        catch("card", {"note": f"paid with {_card} yesterday"}, _card),
        catch("card", {"comment": f"card: {_grouped(_card, ' ')}"}, _card),
        catch("card", {"msg": f"{_grouped(_card, '-')}, exp 12/29"}, _card),
    ]
CARDS += [
    catch("card", {"csv_line": "1,4111111111111111,2029-12,OK"}, "4111111111111111"),
    catch(
        "card",
        {"cards": "4242424242424242,5555555555554444"},
        "4242424242424242",
        "5555555555554444",
    ),
    catch("card", {"note": "4111.1111.1111.1111"}, "4111111111111111"),
    catch("card", {"note": "4111/1111/1111/1111"}, "4111111111111111"),
    catch("card", {"note": "4111\u00a01111\u00a01111\u00a01111"}, "4111\u00a01111"),
    catch(
        "card",
        {
            "note": "\uff14\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11"
            "\uff11\uff11\uff11\uff11\uff11"
        },
        "\uff14\uff11\uff11\uff11",
    ),
    catch("card", {"note": "4111\u200b1111\u200b1111\u200b1111"}, "4111\u200b1111"),
    catch("card", {"amount_and_card": "19.99 4111111111111111"}, "4111111111111111"),
    catch("card", {"big_number": 4111111111111111}, "4111111111111111"),
    # Stripe card object field names
    catch(
        "card",
        {"card": {"number": "4242424242424242", "cvc": "123", "exp_month": 12}},
        "4242424242424242",
    ),
    catch("card", {"ccNumber": "5555 5555 5555 4444", "cvv2": "737"}, "5555", "737"),
    catch("card", {"numero_de_tarjeta": "4111111111111111"}, "4111111111111111"),
    catch("card", {"Kreditkartennummer": "4111111111111111"}, "4111111111111111"),
    catch("card", {"numéro_de_carte": "4111111111111111"}, "4111111111111111"),
    catch("card", {"numero_carta": "4111111111111111"}, "4111111111111111"),
    catch("card", {"numero_do_cartao": "4111111111111111"}, "4111111111111111"),
    catch("card", {"kaartnummer": "4111111111111111"}, "4111111111111111"),
    catch("card", {"kortnummer": "4111111111111111"}, "4111111111111111"),
    catch("card", {"card_no": "4111111111111111"}, "4111111111111111"),
]
CARDS += [
    keep("card", {"order_id": "113-1234567-1234567"}),  # Amazon's order id shape
    keep("card", {"order_ids": "112-9876543-2109876, 114-2468024-6802468"}),
    keep("card", {"pi": "3.1415926535897932"}),
    keep("card", {"ts_ms": "1700000000123", "ts_us": "1700000000123456"}),
    keep("card", {"price": "4111111111111111.25"[:0] + "1299.00"}),
    keep("card", {"card_brand": "visa", "card_last4": "4242"}),  # Stripe's non-sensitive fields
]

# -- US SSNs: SSA's sample card number 219-09-9999, stdnum's vector ----------------------------
SSNS = [
    catch("ssn", {"note": "my ssn is 219-09-9999"}, "219-09-9999", "219099999"),
    catch("ssn", {"note": "SSN 536 90 4399 on file"}, "536 90 4399"),
    catch("ssn", {"ssn": "536904399"}, "536904399"),
    catch("ssn", {"socialSecurityNumber": "536-90-4399"}, "536-90-4399"),
    catch("ssn", {"socialsecuritynumber": "536-90-4399"}, "536-90-4399"),
    keep("ssn", {"zip": "94107-1234", "sku": "123-45-ABCD"}),
]

# -- national identifiers: python-stdnum doctest vectors; HMRC's specimen NINO ------------------
NATIONAL = [
    catch("national_id", {"note": "ITIN 912-90-3456"}, "912-90-3456"),
    catch("national_id", {"note": "NI number QQ 12 34 56 C"}, "QQ 12 34 56 C"),
    catch("national_id", {"note": "NINO: QQ123456C"}, "QQ123456C"),
    catch("national_id", {"note": "Steuer-ID 36 574 261 809"}, "36 574 261 809"),
    catch("national_id", {"note": "NIR 2 95 10 99 126 111 93"}, "2 95 10 99 126 111 93"),
    catch("national_id", {"note": "NIR 295109912611193"}, "295109912611193"),
    catch("national_id", {"note": "DNI 54362315-K"}, "54362315-K"),
    catch("national_id", {"note": "NIE X2482300W"}, "X2482300W"),
    catch("national_id", {"note": "CF RCCMNL83S18D969H"}, "RCCMNL83S18D969H"),
    catch("national_id", {"note": "pnr 880320-0016"}, "880320-0016"),
    catch("national_id", {"note": "CPF 390.533.447-05"}, "390.533.447-05"),
    catch("national_id", {"note": "aadhaar 2341 2341 2346"}, "2341 2341 2346"),
    catch("national_id", {"note": "SIN 123-456-782"}, "123-456-782"),
    # under keys, compact forms too
    catch("national_id", {"bsn": "111222333"}, "111222333"),
    catch("national_id", {"burgerservicenummer": "111222333"}, "111222333"),
    catch("national_id", {"Steuer-ID": "36574261809"}, "36574261809"),
    catch("national_id", {"Steueridentifikationsnummer": "36574261809"}, "36574261809"),
    catch("national_id", {"numero_de_securite_sociale": "295109912611193"}, "2951099"),
    catch("national_id", {"codice_fiscale": "RCCMNL83S18D969H"}, "RCCMNL83S18D969H"),
    catch("national_id", {"personnummer": "8803200016"}, "8803200016"),
    catch("national_id", {"cpf": "39053344705"}, "39053344705"),
    catch("national_id", {"DNI": "54362315K"}, "54362315K"),
    catch("national_id", {"national_insurance_number": "QQ123456C"}, "QQ123456C"),
    catch("national_id", {"social_insurance_number": "046454286"}, "046454286"),
    catch("national_id", {"tax_identification_number": "91-1144442"}, "91-1144442"),
    catch(
        "national_id", {"passportNumber": "123456789", "passport_expiry": "2030-01-01"}, "123456789"
    ),
    catch("national_id", {"drivers_license_number": "D1234567"}, "D1234567"),
    catch("national_id", {"driving_licence_no": "MORGA753116SM9IJ"}, "MORGA753116SM9IJ"),
    catch("national_id", {"Führerscheinnummer": "B072RRE2I55"}, "B072RRE2I55"),
    catch("national_id", {"numero_passeport": "15AB12345"}, "15AB12345"),
    catch("national_id", {"pasaporte": "PAA000000"}, "PAA000000"),
    catch("national_id", {"Personalausweisnummer": "T22000129"}, "T22000129"),
    catch("national_id", {"aadhaar_number": "234123412346"}, "234123412346"),
    keep("national_id", {"order": "20240115-0042", "invoice": "INV-2024-000123"}),
]

# -- IBAN and bank data: the SWIFT IBAN registry's examples ----------------------------------
IBANS = [
    "DE89 3704 0044 0532 0130 00",
    "GB29 NWBK 6016 1331 9268 19",
    "FR14 2004 1010 0505 0001 3M02 606",
    "ES91 2100 0418 4502 0005 1332",
    "IT60 X054 2811 1010 0000 0123 456",
    "NL91 ABNA 0417 1643 00",
    "SE45 5000 0000 0583 9825 7466",
    "CH93 0076 2011 6238 5295 7",
    "PT50 0002 0123 1234 5678 9015 4",
    "AT61 1904 3002 3457 3201",
    "PL61 1090 1014 0000 0712 1981 2874",
]
BANK: list[Case] = []
for _iban in IBANS:
    _compact = _iban.replace(" ", "")
    BANK += [
        catch("bank", {"note": f"pay to {_iban} please"}, _iban, _compact),
        catch("bank", {"memo": f"IBAN:{_compact}."}, _compact),
    ]
BANK += [
    catch("bank", {"IBAN": "DE89370400440532013000", "BIC": "COBADEFFXXX"}, "DE8937", "COBADEFF"),
    catch("bank", {"swift_code": "DEUTDEFF"}, "DEUTDEFF"),
    catch("bank", {"Kontonummer": "0532013000", "BLZ": "37040044"}, "0532013000", "37040044"),
    catch("bank", {"Bankverbindung": {"iban": "DE89370400440532013000"}}, "DE8937"),
    catch(
        "bank",
        {"routing_number": "110000000", "account_number": "000123456789"},
        "110000000",
        "000123456789",
    ),  # Stripe test bank account
    catch("bank", {"sort_code": "40-47-84", "accountNo": "70872490"}, "40-47-84", "70872490"),
    catch("bank", {"numero_de_cuenta": "0049 1500 05 1234567892"}, "1234567892"),
    catch("bank", {"rekeningnummer": "NL91ABNA0417164300"}, "NL91ABNA"),
    catch("bank", {"conto_corrente": "IT60X0542811101000000123456"}, "IT60X"),
    keep("bank", {"plan": "DE-premium-2024", "bank_name": "ING", "currency": "EUR"}),
]

# -- phones: libphonenumber's example numbers (metadata), Ofcom's drama range ------------------
_REGIONS = ["US", "GB", "DE", "FR", "ES", "IT", "PT", "NL", "SE", "BR", "CA"]
PHONES: list[Case] = []
for _region in _REGIONS:
    for _kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE):
        _number = phonenumbers.example_number_for_type(_region, _kind)
        assert _number is not None
        _national = phonenumbers.format_number(_number, phonenumbers.PhoneNumberFormat.NATIONAL)
        _intl = phonenumbers.format_number(_number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        _digits = str(_number.national_number)
        PHONES += [
            catch("phone", {"country": _region, "note": f"call {_national} today"}, _national),
            catch("phone", {"note": f"call {_intl} today"}, _intl),
            catch("phone", {"note": "tel. 00" + _intl[1:]}, _intl[1:]),
        ]
PHONES += [
    catch("phone", {"note": "call (415) 555-2671 after 5"}, "555-2671"),
    catch("phone", {"country": "GB", "note": "ring 020 7946 0958"}, "7946 0958"),
    catch("phone", {"billing_phone": "4155552671"}, "4155552671"),
    catch("phone", {"secondary_phone": "4155552671", "alt_phone": "4155552672"}, "415555267"),
    catch("phone", {"phonenumber": "4155552671", "PhoneNo": "4155552672"}, "415555267"),
    catch("phone", {"MobilePhone": "+14155552671", "HomePhone": "4155552672"}, "415555267"),
    catch("phone", {"mobilephone": "+14155552671"}, "415555267"),  # HubSpot
    catch("phone", {"shipping": {"name": "Ada", "phone": "+14155552671"}}, "415555267"),
    catch(
        "phone",
        {"Telefonnummer": "030 123456", "Handynummer": "01512 3456789"},
        "123456",
        "3456789",
    ),
    catch(
        "phone",
        {"téléphone": "01 23 45 67 89", "portable": "06 12 34 56 78"},
        "23 45 67",
        "12 34 56",
    ),
    catch("phone", {"teléfono": "810 12 34 56", "movil": "612 34 56 78"}, "12 34 56", "34 56"),
    catch("phone", {"cellulare": "312 345 6789", "telefono": "02 1234 5678"}, "345", "1234"),
    catch("phone", {"telemovel": "912 345 678", "telefone": "21 234 5678"}, "345 678", "234 5"),
    catch("phone", {"telefoonnummer": "010 123 4567", "mobiel": "06 12345678"}, "123", "1234"),
    catch("phone", {"mobilnummer": "070-123 45 67"}, "123 45 67"),
    keep(
        "phone",
        {
            "phone_verified_at": "2024-01-15T10:30:00Z",
            "is_mobile": True,
            "mobile_app_version": "5.2.1",
            "phone_model": "Pixel 8",
            "phone_country_code": "US",
        },
    ),
    keep("phone", {"note": "meeting 2024-01-15 10:30, room 4.12"}),
    keep("phone", {"email": "me+14155552671@example.com"}),
]

# -- IP addresses: RFC 5737 (IPv4) and RFC 3849 (IPv6) documentation addresses ------------------
IPS = [
    catch("ip", {"ip": "203.0.113.7"}, "203.0.113.7"),
    catch("ip", {"client_ip": "198.51.100.23"}, "198.51.100.23"),
    catch("ip", {"last_login_ip": "2001:db8::1"}, "2001:db8::1"),
    catch("ip", {"ipAddress": "192.0.2.44", "remote_addr": "192.0.2.45"}, "192.0.2.4"),
    catch("ip", {"X-Forwarded-For": "203.0.113.9, 198.51.100.1"}, "203.0.113.9"),
    catch("ip", {"ipv6": "2001:db8:85a3::8a2e:370:7334"}, "2001:db8:85a3"),
    catch("ip", {"user_ip_address": "203.0.113.8"}, "203.0.113.8"),
    catch("ip", {"adresse_ip": "203.0.113.10"}, "203.0.113.10"),
    keep("ip", {"ip_city": "Berlin", "ip_country": "DE", "app_version": "10.0.0.12"}),
]

# -- addresses: Shopify, Stripe, Mailchimp and Salesforce address shapes ---------------------
ADDRESSES = [
    catch(
        "address",
        {
            "default_address": {
                "address1": "1 Infinite Loop",
                "address2": "Suite 5",
                "first_name": "Ada",
                "company": "ACME",
            }
        },
        "Infinite",
        "Suite",
    ),
    catch(
        "address", {"address": {"line1": "510 Townsend St", "line2": "Apt 2"}}, "Townsend", "Apt 2"
    ),
    catch(
        "address", {"ADDRESS": {"addr1": "675 Ponce de Leon", "addr2": "Ste 5000"}}, "Ponce", "5000"
    ),
    catch("address", {"MailingStreet": "1 Market St"}, "Market"),
    catch(
        "address",
        {"billing_address": {"street": "1 Main St", "recipient": "Ada L."}},
        "Main",
        "Ada",
    ),
    catch("address", {"Straße": "Unter den Linden 77", "Hausnummer": "77a"}, "Linden", "77a"),
    catch("address", {"adresse": "55 rue du Faubourg Saint-Honoré"}, "Faubourg"),
    catch(
        "address", {"dirección": "Calle de Alcalá 1", "domicilio": "C/ Mayor 3"}, "Alcal", "Mayor"
    ),
    catch("address", {"indirizzo": "Via del Corso 12"}, "Corso"),
    catch(
        "address",
        {"endereço": "Rua Augusta 100", "morada": "Av. da Liberdade 1"},
        "Augusta",
        "Liberdade",
    ),
    catch("address", {"adres": "Damrak 1", "straat": "Kalverstraat"}, "Damrak", "Kalver"),
    catch("address", {"adress": "Drottninggatan 1"}, "Drottning"),
    catch("address", {"addresses": ["1 Main St", {"streetAddress": "2 Side St"}]}, "Main", "Side"),
    keep(
        "address",
        {
            "shipping_address_country": "US",
            "address_verified": True,
            "default_address": {
                "city": "Ottawa",
                "province": "Ontario",
                "province_code": "ON",
                "country": "Canada",
                "country_code": "CA",
                "zip": "K2P 1L4",
            },
        },
    ),
    keep(
        "address",
        {"address": {"city": "Berlin", "postal_code": "10117", "country": "DE", "state": "BE"}},
    ),
    keep(
        "address",
        {
            "PLZ": "10117",
            "Ort": "Berlin",
            "ville": "Paris",
            "code_postal": "75008",
            "ciudad": "Madrid",
            "codigo_postal": "28014",
            "citta": "Roma",
            "cap": "00186",
            "cidade": "Lisboa",
            "cep": "01310-100",
            "postcode": "1012 JS",
            "woonplaats": "Amsterdam",
            "postnummer": "111 52",
            "MailingCity": "San Francisco",
        },
    ),
]

# -- date of birth ------------------------------------------------------------------------------
DOB = [
    catch("dob", {"date_of_birth": "1990-04-01"}, "1990-04-01"),
    catch("dob", {"dateofbirth": "1990-04-01", "DOB": "04/01/1990"}, "1990", "04/01"),
    catch("dob", {"Birthdate": "1990-04-01"}, "1990"),  # Salesforce Contact
    catch("dob", {"BIRTHDAY": "04/01"}, "04/01"),  # Mailchimp merge field
    catch("dob", {"Geburtsdatum": "01.04.1990"}, "01.04.1990"),
    catch("dob", {"date_de_naissance": "01/04/1990"}, "01/04/1990"),
    catch("dob", {"fecha_de_nacimiento": "1990-04-01"}, "1990"),
    catch("dob", {"data_di_nascita": "1990-04-01", "data_de_nascimento": "1990-04-02"}, "1990"),
    catch("dob", {"geboortedatum": "1990-04-01", "födelsedatum": "1990-04-02"}, "1990"),
    catch("dob", {"user_dob": "1990-04-01"}, "1990"),
    keep("dob", {"birth_month": 4, "birthday_month": "April", "birth_year_bucket": "1990s"}),
]

# -- GDPR Art. 9 special categories ----------------------------------------------------------
ART9 = [
    catch("art9", {"health": {"conditions": ["asthma"], "notes": "inhaler"}}, "asthma", "inhaler"),
    catch("art9", {"data_concerning_health": "type 1 diabetes"}, "diabetes"),
    catch("art9", {"medical_history": ["appendectomy"]}, "appendectomy"),
    catch("art9", {"diagnoses": ["J45"], "allergies": "penicillin"}, "J45", "penicillin"),
    catch("art9", {"disabilities": "wheelchair user"}, "wheelchair"),
    catch("art9", {"pregnancy_status": "pregnant"}, "pregnant"),
    catch("art9", {"mental_health_notes": "anxiety"}, "anxiety"),
    catch("art9", {"blood_type": "O-"}, "O-"),
    catch("art9", {"sexual_orientation": "bisexual", "sex_life": "x-secret"}, "bisexual", "x-sec"),
    catch("art9", {"racial_or_ethnic_origin": "x-origin"}, "x-origin"),
    catch("art9", {"ethnicity": "x-ethn", "race": "x-race"}, "x-ethn", "x-race"),
    catch(
        "art9",
        {"political_opinions": "x-party", "politicalAffiliation": "x-aff"},
        "x-party",
        "x-aff",
    ),
    catch("art9", {"religious_or_philosophical_beliefs": "x-faith"}, "x-faith"),
    catch("art9", {"religion": "x-rel", "denomination": "x-den"}, "x-rel", "x-den"),
    catch("art9", {"trade_union_membership": True, "union_member_id": "U-1"}, "U-1"),
    catch("art9", {"genetic_data": "rs53576 AG", "dnaProfile": "x-dna"}, "rs53576", "x-dna"),
    catch(
        "art9", {"biometric_data": "template-x", "fingerprint_hash": "fp-x"}, "template-x", "fp-x"
    ),
    catch(
        "art9", {"Gesundheitszustand": "x-ges", "Religionszugehörigkeit": "x-rz"}, "x-ges", "x-rz"
    ),
    catch(
        "art9",
        {"Krankheiten": "x-kr", "Gewerkschaftsmitglied": True, "Konfession": "x-ko"},
        "x-kr",
        "x-ko",
    ),
    catch(
        "art9",
        {"santé": "x-sante", "origine_ethnique": "x-oe", "syndicat": "x-syn"},
        "x-sante",
        "x-oe",
        "x-syn",
    ),
    catch(
        "art9",
        {"salud": "x-salud", "orientación_sexual": "x-os", "afiliación_sindical": "x"},
        "x-salud",
        "x-os",
    ),
    catch(
        "art9",
        {"salute": "x-salute", "religione": "x-relig", "origine_etnica": "x-oe2"},
        "x-salute",
        "x-relig",
        "x-oe2",
    ),
    catch(
        "art9",
        {"saúde": "x-saude", "religião": "x-religiao", "doença": "x-doenca"},
        "x-saude",
        "x-religiao",
        "x-doenca",
    ),
    catch(
        "art9",
        {"gezondheid": "x-gez", "seksuele_geaardheid": "x-sg", "vakbond": "x-vb"},
        "x-gez",
        "x-sg",
        "x-vb",
    ),
    catch(
        "art9",
        {"hälsa": "x-halsa", "sjukdom": "x-sjuk", "fackförening": "x-fack"},
        "x-halsa",
        "x-sjuk",
        "x-fack",
    ),
    keep(
        "art9",
        {
            "account_health": "green",
            "health_score": 87,
            "customer_health": "at risk",
            "gender": "f",
            "language": "de",
        },
    ),
]

# -- credentials and secrets: keys from Django, WordPress, Magento, Auth0, AWS; token formats from
# the vendors' docs (AWS's AKIAIOSFODNN7EXAMPLE, Stripe's sk_test key, jwt.io's sample) and
# gitleaks' true-positive samples ---------------------------------------------------------------
_JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9" + ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4g"
    "RG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ" + ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
_OPENAI = (
    "sk-" + "proj-SevzWEV_NmNnMndQ5gn6PjFcX_9ay5SEKse8AL0EuYAB0cIgFW7Equ3vCbUbYShvii6L3rBw3"
    "WT3BlbkFJdD9FqO9Z3BoBu9F-KFR6YJtvW6fUfqg2o2Lfel3diT3OCRmBB24hjcd_uLEjgr9tCqnnerVw8A"
)
SECRETS = [
    catch("secret", {"password": "x-hunter2"}, "x-hunter2"),
    catch(
        "secret",
        {"PassWord": "x-pw1", "APIkey": "x-key1", "pwd": "x-pw2"},
        "x-pw1",
        "x-key1",
        "x-pw2",
    ),
    catch("secret", {"user_pass": "x-wp", "user_activation_key": "x-wpkey"}, "x-wp"),  # WordPress
    catch("secret", {"password_hash": "x-mg", "rp_token": "x-rp"}, "x-mg", "x-rp"),  # Magento
    catch(
        "secret",
        {"refresh_token": "x-rt", "id_token": "x-it", "client_secret": "x-cs"},
        "x-rt",
        "x-it",
        "x-cs",
    ),
    catch("secret", {"accesstoken": "x-at", "authToken": "x-au"}, "x-at", "x-au"),
    catch("secret", {"SecretAccessKey": "x-aws", "aws_secret_access_key": "x-aws2"}, "x-aws"),
    catch(
        "secret",
        {"security_answer": "x-fluffy", "mothers_maiden_name": "x-mmn"},
        "x-fluffy",
        "x-mmn",
    ),
    catch(
        "secret", {"Passwort": "x-de", "Kennwort": "x-de2", "mot_de_passe": "x-fr"}, "x-de", "x-fr"
    ),
    catch(
        "secret",
        {"contraseña": "x-es", "senha": "x-pt", "wachtwoord": "x-nl", "lösenord": "x-sv"},
        "x-es",
        "x-pt",
        "x-nl",
        "x-sv",
    ),
    catch("secret", {"note": "key " + "AKIA" + "IOSFODNN7EXAMPLE"}, "IOSFODNN7EXAMPLE"),
    catch("secret", {"note": "sk_" + "test_" + "4eC39HqLyjWDarjtT1zdp7dc"}, "4eC39HqLy"),
    catch("secret", {"note": f"token {_JWT}"}, "SflKxwRJ"),
    catch("secret", {"note": f"openai {_OPENAI}"}, "SevzWEV"),
    catch("secret", {"note": "npm_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"}, "a1B2c3D4"),
    catch(
        "secret",
        {
            "note": "https://hooks.slack.com/services/"
            + "T00000000/B00000000/"
            + "XXXXXXXXXXXXXXXXXXXXXXXX"
        },
        "B00000000",
    ),
    catch(
        "secret",
        {
            "note": "SG."
            + "ngeVfQFYQlKU0ufo8x5d1A"
            + "."
            + "TwL2iGABf9DHoTf-09kqeF8tAmbihYzrnopKc-1s5cr"
        },
        "ngeVfQFY",
    ),
    catch("secret", {"note": "ghp_" + "0123456789abcdefghijklmnopqrstuvwxyzAB"}, "0123456789abc"),
    catch(
        "secret",
        {"log": "connect postgres://app:" + "s3cr3tpass@db.example.com:5432/app"},
        "s3cr3tpass",
    ),
    catch(
        "secret",
        {"log": "GET / Authorization: Bearer " + "abcdef0123456789abcdef"},
        "abcdef0123456789",
    ),
    catch("secret", {"log": "login failed user=ada password=" + "Tr0ub4dor&3 ip=x"}, "Tr0ub4dor"),
    keep(
        "secret",
        {
            "monthly_tokens_used": 1200,
            "tokens_used": 5,
            "token_count": 3,
            "password_last_changed": "2024-01-15",
            "password_strength": "strong",
            "passwordless_login": True,
            "auth_provider": "google",
            "cookie_consent": True,
            "secretary_name": "Joan",
        },
    ),
    keep(
        "secret",
        {
            "url": "https://shop.example.com/p/123?ref=abc#top",
            "note": "Use the sk_live toggle and eyJ prefix as documented",
        },
    ),
]

# -- e-mail: kept in any spelling, also in lists ---------------------------------------------
EMAIL = [
    keep("email", {"email": "ada@example.com", "Email": "ada@example.com"}),
    keep(
        "email",
        {"email_addresses": ["a@example.com", "b@example.com"], "emails": ["c@example.com"]},
    ),
    keep("email", {"billing_email_address": "billing@example.com", "emailAddress": "x@ex.io"}),
    keep(
        "email",
        {
            "email_address_verified": True,
            "e-mail": "y@example.com",
            "courriel": "z@example.fr",
            "correo_electronico": "w@example.es",
        },
    ),
    keep("email", {"E-Mail-Adresse": "de@example.de", "e_postadress": "sv@example.se"}),
]

CORPUS: list[Case] = (
    CARDS + SSNS + NATIONAL + BANK + PHONES + IPS + ADDRESSES + DOB + ART9 + SECRETS + EMAIL
)

_NOT_DIGIT = re.compile(r"\D")
_SANITIZER = Sanitizer(default_policy(), b"corpus-key")


def outcome(case: Case) -> tuple[bool, str]:
    """(passed, why): whether the default policy does what ``case`` expects."""
    clean = _SANITIZER.apply(case.attributes)
    if case.expect == "keep":
        return clean == case.attributes, "changed"
    text = json.dumps(clean, ensure_ascii=False)
    for secret in case.secrets:
        if secret in text:
            return False, f"{secret[:6]}... survived"
        digits = _NOT_DIGIT.sub("", secret)
        if len(digits) >= 6 and digits in _NOT_DIGIT.sub(" ", text).split():
            return False, f"{secret[:6]}... survived as digits"
    return True, ""


def counts() -> dict[tuple[str, str], tuple[int, int]]:
    """(category, expect) -> (cases, failures)."""
    total: Counter[tuple[str, str]] = Counter()
    failed: Counter[tuple[str, str]] = Counter()
    for case in CORPUS:
        total[case.category, case.expect] += 1
        if not outcome(case)[0]:
            failed[case.category, case.expect] += 1
    return {k: (total[k], failed[k]) for k in sorted(total)}


if __name__ == "__main__":
    for (category, expect), (n, bad) in counts().items():
        word = "misses" if expect == "catch" else "losses"
        print(f"{category:12} {expect:6} {n:4} cases  {bad} {word}")
