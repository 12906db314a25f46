"""An independent privacy corpus: profiles shaped like the payloads real systems send.

Written (round 3 of issue 16) *before* reading the policy, the detectors or the first corpus:
only the ``Case`` shape and the outcome check of :mod:`tests.privacy.corpus` were read. Field
names and nesting follow the public API documents and export formats of the systems named per
block (Shopify, WooCommerce, Magento, Stripe, Salesforce, HubSpot, Zendesk, Intercom, Freshdesk,
Auth0, Okta, Firebase, payroll and HR tools, Segment-style flattened traits) and the words that
forms use in EN, DE, FR, ES, IT, NL, PL, SV and PT. Values carry valid checksums where the real
thing has one (Luhn cards, ISO 7064 IBANs, the national ids' own check digits, checked with
python-stdnum in ``test_corpus_independent.py``; phones are valid for libphonenumber), so a
detector is asked fairly.

Values generated for this file (random digits with computed check digits) are not anyone's:
the phone numbers sit in libphonenumber's example ranges, the IP addresses in RFC 5737/3849
documentation ranges, the secrets are random strings of the documented shape.

Cases marked ``DOCUMENTED_CHOICE`` contradict a trade-off stated in docs/policy.md; they are
listed there and are not counted as failures.

Secret-shaped strings are built by concatenation so that no scanner flags this file.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.privacy.corpus import Case, catch, keep

# -- values with valid checksums (see test_corpus_independent.test_values_are_valid) --------------
CARDS = {
    "visa": "4577463706433047",
    "mc": "5145294039402908",
    "amex": "377794345461571",
    "discover": "6011682949041080",
    "jcb": "3553724457712701",
    "visa2": "4770717917023656",
    "mc2": "5508069578135114",
    "mc_2series": "2221813060106247",
}
SSNS = ["374-11-3613", "105-30-7702", "202-44-3349", "495-80-9999", "398-92-3266"]
ITIN = "912-70-3456"
STEUER_ID = ["72328601290", "82510273461", "54610924836"]
NIR = ["185057800632940", "185057800603840"]
DNI = ["24660677P", "74000364A"]
NIE = "X1762632G"
CODICE_FISCALE = ["RSSMRA85T10A562S", "BNCGLI90A41H501E"]
BSN = ["913539612", "171092223"]
PESEL = ["85031206931", "91072405754"]
PERSONNUMMER = ["850312-3138", "19910724-6606"]
CPF = ["850.865.026-40", "352.606.067-36"]
AADHAAR = ["8001 8802 5995", "398472964991"]
PAN_IN = "AFZPK7190K"
SIN = ["146 497 011", "156-474-348"]
NINO = ["AB 12 34 56 C", "JG103759A"]
PT_NIF = "131704346"
IBANS = {
    "de": "DE33100100105061712255",
    "nl": "NL86INGB1428150521",
    "fr": "FR4230003010006182965555000",
    "gb": "GB36BARC20000053873226",
    "it": "IT36X0306909606185365875281",
    "ch": "CH9300762011623852957",
    "se": "SE3650002288521754483855",
    "pl": "PL51109010142722884829933833",
    "es": "ES9121000418450200051332",
    "be": "BE71096123456769",
}
PHONES = {  # region: (national, international, e164)
    "US": ("(201) 555-0526", "+1 201-555-0526", "+12015550526"),
    "GB": ("07400 123159", "+44 7400 123159", "+447400123159"),
    "GB_fixed": ("0121 234 5083", "+44 121 234 5083", "+441212345083"),
    "DE": ("01512 3456016", "+49 1512 3456016", "+4915123456016"),
    "FR": ("06 12 34 51 86", "+33 6 12 34 51 86", "+33612345186"),
    "ES": ("612 34 53 90", "+34 612 34 53 90", "+34612345390"),
    "IT": ("312 345 6030", "+39 312 345 6030", "+393123456030"),
    "NL": ("06 12345928", "+31 6 12345928", "+31612345928"),
    "SE": ("070-123 40 13", "+46 70 123 40 13", "+46701234013"),
    "PL": ("512 345 459", "+48 512 345 459", "+48512345459"),
    "PT": ("912 345 177", "+351 912 345 177", "+351912345177"),
    "BR": ("(11) 96123-4121", "+55 11 96123-4121", "+5511961234121"),
    "IN": ("081234 56280", "+91 81234 56280", "+918123456280"),
    "CA": ("(506) 234-5280", "+1 506-234-5280", "+15062345280"),
    "AU": ("0412 345 485", "+61 412 345 485", "+61412345485"),
    "CH": ("078 123 48 88", "+41 78 123 48 88", "+41781234888"),
}


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


JWT = ".".join(
    [
        _b64({"alg": "HS256", "typ": "JWT"}),
        _b64({"sub": "u-93", "iat": 1718000000}),
        "Zq4v" + "N2p0Y" * 7,
    ]
)
AWS_KEY_ID = "AKIA" + "ZQ3DTNM7XW2LKP5E"
AWS_SECRET = "q8Yb3kZ1" + "vN0rT6wXeP2sLmA9cH4jF7uD5gKiB1oR"
GH_PAT = "ghp_" + "R7cZ2kq9LmX4vB1nT8sW3yJ6pD0fH5aE2uGi"
GH_FINE = (
    "github_pat_"
    + "11ABCDEFG0"
    + "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5oQ7sU9wY1aC3eG5iK7mO9qS1uW3yA5cE7gI9kM1"
)
SLACK_BOT = "xoxb-" + "2231547608-7351128094466-" + "kQ2vN8rT5wY1zB4eH7jL0pS3"
SLACK_HOOK = (
    "https://hooks.slack.com/services/" + "T04BQ7K2M/B07HZ3QW9PL/" + "Xk2Rb9Vt5Nq1Lm7Zc3Wd8Hs4"
)
STRIPE_LIVE = "sk_live_" + "51NqK2eLk9Xy7Zw3Vb5Tr8Mn2Pq4Hs6Jd"
STRIPE_RESTRICTED = "rk_live_" + "51NqK2eHy7Tq3Wv9Lm5Xc2Bn8Zr4Ps6Ka"
STRIPE_WHSEC = "whsec_" + "Hk7Qz2Wm9Xc4Vb1Nt6Ry8Lp3Js5Df0Ga"
GOOGLE_KEY = "AIza" + "SyB3k9Qx7Vn2Lm5Zp8Rt1Wc4Yh6Jd0Fs_Ge"
GOOGLE_OAUTH = "ya29." + "a0AfB_byC7kQ2mZ9xVn4Lp8Rt1Wc3Yh6Jd0FsGe5Hb2Nu7Ko"
GOOGLE_REFRESH = "1//0g" + "Lk7Qz2Wm9Xc4Vb1Nt6Ry8Lp3Js5Df0GaHk7Qz2Wm9Xc4Vb1"
OPENAI = "sk-proj-" + "Ab3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5oQ7sU9wY1aC3eG5iK7mO9qS1uW3yT3BlbkFJ"
ANTHROPIC = (
    "sk-ant-api03-" + "Zx8Cv7Bn6Mq5Wa4Se3Dr2Ft1Gy0HuJi9Ko8Lp7Zx6Cv5Bn4Mq3Wa2Se1Dr0Ft9Gy8HuJi7-Ko6AA"
)
SENDGRID = "SG." + "ngeVfQFYQlKU0ufo8x5d1A" + "." + "TwL2iGABf9DHoTf-09kqeF8tAmbihYzrnopKc-1s5cr"
NPM = "npm_" + "Zq4vN2p0Yk8Lm3Xc7Wb1Rt5Hs9Jd6Fg2Ae0K"
GITLAB = "glpat-" + "xK3mN8pQ2rT5vW9yZ1bC"
SHOPIFY_TOKEN = "shpat_" + "3f9a1c7e5b2d8f4a6c0e9b7d5f3a1c8e"
TWILIO_SECRET = "SK" + "7b1e4c9a2f6d3b8e0a5c7f9d1b3e6a8c"
MAILGUN = "key-" + "3ax6xnjp29jd6fds4gc373sgvjxteol0"
HF_TOKEN = "hf_" + "kQvNrTwYzBeHjLpSxMcFgAdQwErTyUiOpA"
PRIVATE_KEY = (
    "-----BEGIN " + "RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END " + "RSA PRIVATE KEY-----"
)
TOTP_SEED = "JBSWY3DP" + "EHPK3PXPQ7Z4"
PASSWORDS = ["Tr0ub4dor&3x", "hunter2-Kq9", "S0mmer2024!!", "correct-horse-9q", "Pa55w0rd#Fr"]
BCRYPT = "$2b$12$" + "R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"
FIREBASE_HASH = (
    "lSrfV15cpx95/sZS2W9c9Kp6i/LVgQNDNC/qzrCnh1SAyZvqmZqAjTdn3aoItz+VHjoZilo78198JAdRuid5lQ=="
)


# -- payment cards: Shopify/WooCommerce/Magento/Stripe payloads and custom fields ------------------
V, M, A = CARDS["visa"], CARDS["mc"], CARDS["amex"]


def _g4(card: str, sep: str) -> str:
    return sep.join(card[i : i + 4] for i in range(0, len(card), 4))


CARD: list[Case] = [
    catch("card", {"card_number": V}, V),
    catch("card", {"cardNumber": _g4(M, " ")}, M),
    catch("card", {"CardNumber": _g4(V, "-")}, V),
    catch("card", {"cc_number": CARDS["discover"]}, CARDS["discover"]),
    catch("card", {"ccnum": CARDS["jcb"]}, CARDS["jcb"]),
    catch("card", {"credit_card": "3777 943454 61571"}, A),
    catch("card", {"creditCardNumber": CARDS["mc_2series"]}, CARDS["mc_2series"]),
    catch("card", {"payment": {"card": {"number": V, "exp_month": 12, "exp_year": 2027}}}, V),
    catch(
        "card",
        {"payment_method": {"type": "card", "card": {"number": M, "cvc": "8314"}}},
        M,
        "8314",
    ),
    catch("card", {"pan": CARDS["visa2"]}, CARDS["visa2"]),
    catch("card", {"Kreditkartennummer": _g4(V, " ")}, V),
    catch("card", {"numero_carte": _g4(M, " ")}, M),
    catch("card", {"numero_tarjeta": _g4(V, "-")}, V),
    catch("card", {"numero_carta": CARDS["mc2"]}, CARDS["mc2"]),
    catch("card", {"card_no": CARDS["visa2"]}, CARDS["visa2"]),
    catch("card", {"order": {"payment_details": {"credit_card_number": _g4(M, " ")}}}, M),
    catch("card", {"note": f"4577463706433047,12/27,{M},01/28"}, V, M),
    catch("card", {"csv": f"name,card,exp\nAnn,{V},12/27\nBob,{M},01/28"}, V, M),
    catch("card", {"cards": f"{V}, {M}, {CARDS['discover']}"}, V, M, CARDS["discover"]),
    catch("card", {"comment": f"charged twice on card {_g4(V, ' ')} exp 12/27"}, V),
    catch("card", {"support_message": f"my new card is {_g4(M, '.')} please update"}, M),
    catch("card", {"memo": f"card {_g4(V, '/')}"}, V),
    catch("card", {"note": "card " + _g4(V, "\u00a0")}, V),
    catch(
        "card", {"note": "card " + V.translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})}, V
    ),
    catch("card", {"note": "card 4577\u200b4637\u200b0643\u200b3047"}, V),
    catch(
        "card", {"line_items": [{"sku": "GC-50", "properties": [{"name": "Card", "value": V}]}]}, V
    ),
    catch("card", {"Credit_Card__c": _g4(A[:4], "") + " " + A[4:10] + " " + A[10:]}, A),
    catch("card", {"cvv": "8314"}, "8314"),
    catch("card", {"cvv2": "7051"}, "7051"),
    catch("card", {"security_code": "6402"}, "6402"),
    catch("card", {"card": {"cvc": "5938"}}, "5938"),
    catch("card", {"card_code": "4827"}, "4827"),
    catch("card", {"Prüfnummer": "3916"}, "3916"),
    keep("card", {"card": {"brand": "visa", "last4": "3047", "funding": "debit"}}),
    keep(
        "card",
        {
            "payment_method": {
                "id": "pm_1NqK2eLk9Xy7Zw3V",
                "card": {
                    "brand": "mastercard",
                    "country": "US",
                    "funding": "credit",
                    "fingerprint": "Xt5EWLLDS7FJjR1c",
                    "checks": {
                        "cvc_check": "pass",
                        "address_line1_check": "pass",
                        "address_postal_code_check": "unchecked",
                    },
                    "wallet": None,
                },
            }
        },
    ),
    keep("card", {"amazon_order_id": "112-4577463-7064330"}),  # 17 digits, Luhn-valid
    keep(
        "card",
        {
            "order_ids": [  # both Luhn-valid
                "111-5145294-0394023",
                "114-6011682-9490410",
            ]
        },
    ),
    keep("card", {"tracking_number": "1Z999AA10123456784", "usps": "9400111899223100012345"}),
    keep("card", {"gtin": "4006381333931", "isbn": "978-3-16-148410-0"}),
    keep("card", {"created_ms": 1718000000000, "ts": "1718000000123"}),
    keep("card", {"card_type": "credit", "payment_gateway": "shopify_payments"}),
    keep("card", {"gift_card_balance": "25.00", "cards_on_file": 2}),
]

# -- US SSN / ITIN in CRM and helpdesk custom fields -----------------------------------------------
SSN: list[Case] = [
    catch("ssn", {"ssn": SSNS[0]}, SSNS[0]),
    catch("ssn", {"SSN": SSNS[1].replace("-", "")}, SSNS[1]),
    catch("ssn", {"social_security_number": SSNS[2]}, SSNS[2]),
    catch("ssn", {"socialSecurityNumber": SSNS[3]}, SSNS[3]),
    catch("ssn", {"socialsecuritynumber": SSNS[4]}, SSNS[4]),
    catch("ssn", {"custom_fields": {"cf_ssn": SSNS[0]}}, SSNS[0]),
    catch("ssn", {"SSN__c": SSNS[1]}, SSNS[1]),
    catch("ssn", {"user_fields": {"social_security_no": SSNS[2]}}, SSNS[2]),
    catch("ssn", {"ssn_no": SSNS[3].replace("-", " ")}, SSNS[3]),
    catch("ssn", {"tax_id": SSNS[4]}, SSNS[4]),
    catch("ssn", {"itin": ITIN}, ITIN),
    catch("ssn", {"employee": {"tin": SSNS[0]}}, SSNS[0]),
    catch("ssn", {"description": f"Customer gave SSN {SSNS[1]} on the call"}, SSNS[1]),
    catch("ssn", {"body": f"my social is {SSNS[2]}, please verify"}, SSNS[2]),
    keep("ssn", {"ssn_verified": True, "ssn_provided_at": "2024-05-01T10:00:00Z"}),
    keep("ssn", {"support_pin_length": 4, "pin_code_length": 6}),
    keep("ssn", {"zip4": "94107-1234", "part_number": "123-45-678"}),
]

# -- national identifiers in the words of each country's forms -------------------------------------
NATIONAL: list[Case] = [
    catch("national_id", {"ni_number": NINO[0]}, NINO[0]),
    catch("national_id", {"national_insurance_number": NINO[1]}, NINO[1]),
    catch("national_id", {"NINO": NINO[1]}, NINO[1]),
    catch("national_id", {"payroll": {"niNumber": NINO[0]}}, NINO[0]),
    catch("national_id", {"steuer_id": STEUER_ID[0]}, STEUER_ID[0]),
    catch("national_id", {"Steueridentifikationsnummer": "82 510 273 461"}, STEUER_ID[1]),
    catch("national_id", {"steuerliche_identifikationsnummer": STEUER_ID[2]}, STEUER_ID[2]),
    catch("national_id", {"numero_securite_sociale": "1 85 05 78 006 329 40"}, NIR[0]),
    catch("national_id", {"nir": NIR[1]}, NIR[1]),
    catch("national_id", {"numéro_de_sécurité_sociale": NIR[0]}, NIR[0]),
    catch("national_id", {"dni": DNI[0]}, DNI[0]),
    catch("national_id", {"nif": DNI[1]}, DNI[1]),
    catch("national_id", {"nie": NIE}, NIE),
    catch("national_id", {"documento_identidad": DNI[1]}, DNI[1]),
    catch("national_id", {"codice_fiscale": CODICE_FISCALE[0]}, CODICE_FISCALE[0]),
    catch("national_id", {"codiceFiscale": CODICE_FISCALE[1]}, CODICE_FISCALE[1]),
    catch("national_id", {"bsn": BSN[0]}, BSN[0]),
    catch("national_id", {"burgerservicenummer": BSN[1]}, BSN[1]),
    catch("national_id", {"pesel": PESEL[0]}, PESEL[0]),
    catch("national_id", {"numer_pesel": PESEL[1]}, PESEL[1]),
    catch("national_id", {"personnummer": PERSONNUMMER[0]}, PERSONNUMMER[0]),
    catch("national_id", {"personal_identity_number": PERSONNUMMER[1]}, PERSONNUMMER[1]),
    catch("national_id", {"cpf": CPF[0]}, CPF[0]),
    catch("national_id", {"billing_cpf": CPF[1]}, CPF[1]),
    catch("national_id", {"cpf_cnpj": CPF[0].replace(".", "").replace("-", "")}, CPF[0]),
    catch("national_id", {"aadhaar": AADHAAR[0]}, AADHAAR[0]),
    catch("national_id", {"aadhar_number": AADHAAR[1]}, AADHAAR[1]),
    catch("national_id", {"pan_number": PAN_IN}, PAN_IN),
    catch("national_id", {"sin": SIN[0]}, SIN[0]),
    catch("national_id", {"social_insurance_number": SIN[1]}, SIN[1]),
    catch("national_id", {"nif_contribuinte": PT_NIF}, PT_NIF),
    catch("national_id", {"passport_number": "C01X00T47"}, "C01X00T47"),
    catch("national_id", {"passportNo": "K7Q3921XD"}, "K7Q3921XD"),
    catch("national_id", {"Reisepassnummer": "C4J7R2MN5"}, "C4J7R2MN5"),
    catch("national_id", {"drivers_license_number": "D8421-55019-73214"}, "D8421-55019-73214"),
    catch("national_id", {"driving_licence_number": "MORGA753116SM9IJ"}, "MORGA753116SM9IJ"),
    catch("national_id", {"dl_number": "F2558371"}, "F2558371"),
    catch("national_id", {"Führerscheinnummer": "B072RRE2I55"}, "B072RRE2I55"),
    catch("national_id", {"id_card_number": "T22000129"}, "T22000129"),
    catch("national_id", {"Personalausweisnummer": "L01X00T47"}, "L01X00T47"),
    catch("national_id", {"numero_passaporto": "YA8263571"}, "YA8263571"),
    catch("national_id", {"tax_ids": {"data": [{"type": "br_cpf", "value": CPF[1]}]}}, CPF[1]),
    catch(
        "national_id",
        {"hr": {"employees": [{"id": 1, "national_id": BSN[0]}, {"id": 2, "national_id": BSN[1]}]}},
        BSN[0],
        BSN[1],
    ),
    catch(
        "national_id",
        {"notes": f"Verified ID: codice fiscale {CODICE_FISCALE[0]}"},
        CODICE_FISCALE[0],
    ),
    catch("national_id", {"comment": f"PESEL {PESEL[1]} podany przez klienta"}, PESEL[1]),
    keep("national_id", {"tax_exempt": False, "tax_rate": "0.19", "vat_included": True}),
    keep("national_id", {"passport_country": "DE", "id_verified": True, "kyc_status": "approved"}),
    keep("national_id", {"sin_embargo": "texto", "pan_size_cm": 28}),
    keep("national_id", {"locale": "pt-BR", "document_type": "cpf"}),
]

# -- bank accounts: payroll, payouts, SEPA mandates, refunds ---------------------------------------
BANK: list[Case] = [
    catch("bank", {"iban": IBANS["de"]}, IBANS["de"]),
    catch("bank", {"IBAN": "NL86 INGB 1428 1505 21"}, IBANS["nl"]),
    catch("bank", {"bank_account": {"iban": IBANS["fr"], "bic": "BNPAFRPP"}}, IBANS["fr"]),
    catch(
        "bank",
        {"Bankverbindung": {"IBAN": IBANS["de"], "Kontoinhaber": "Erika Mustermann"}},
        IBANS["de"],
    ),
    catch("bank", {"sepa_debit": {"mandate": {"iban": IBANS["it"]}}}, IBANS["it"]),
    catch("bank", {"refund_iban": IBANS["ch"]}, IBANS["ch"]),
    catch("bank", {"payout": {"account": {"iban": IBANS["se"]}}}, IBANS["se"]),
    catch("bank", {"numer_rachunku": IBANS["pl"]}, IBANS["pl"]),
    catch("bank", {"cuenta_bancaria": IBANS["es"]}, IBANS["es"]),
    catch("bank", {"rekeningnummer": IBANS["be"]}, IBANS["be"]),
    catch("bank", {"note": "Please refund to GB36 BARC 2000 0053 8732 26 thanks"}, IBANS["gb"]),
    catch("bank", {"message": f"iban:{IBANS['de'].lower()}"}, IBANS["de"]),
    catch(
        "bank",
        {"direct_deposit": {"routing_number": "021000021", "account_number": "000123456789"}},
        "000123456789",
    ),
    catch("bank", {"bank_account_number": "4478201937"}, "4478201937"),
    catch("bank", {"accountNumber": "83920017654"}, "83920017654"),
    catch("bank", {"acct_no": "55012348871"}, "55012348871"),
    catch("bank", {"sort_code": "20-00-00", "account_no": "53873226"}, "53873226"),
    catch("bank", {"Kontonummer": "0532013000"}, "0532013000"),
    catch("bank", {"numero_de_cuenta": "0200051332"}, "0200051332"),
    catch("bank", {"conto_corrente": "000000123456"}, "000000123456"),
    catch("bank", {"clearingnummer": "8327-9", "kontonummer": "9142756301"}, "9142756301"),
    catch("bank", {"rib": "30003 01000 06182965555 00"}, "06182965555"),
    catch(
        "bank",
        {
            "external_accounts": {
                "data": [{"object": "bank_account", "account_number": "6054139987"}]
            }
        },
        "6054139987",
    ),
    keep("bank", {"bank_name": "ING", "payout_schedule": "weekly", "currency": "eur"}),
    keep("bank", {"account_id": "acct_1Nv0FGQ9RKHgCVdK", "account_type": "business"}),
    keep("bank", {"bank_account": {"last4": "2255", "status": "verified", "country": "DE"}}),
    keep("bank", {"iban_verified": True, "sepa_mandate_status": "active"}),
    keep("bank", {"account_number_of_seats": 12, "account_age_days": 403}),
]

# -- phones: national and international formats under phone-like keys ------------------------------
PHONE: list[Case] = []
_PHONE_KEYS = {
    "US": ["phone", "Mobile__c", "hs_whatsapp_phone_number"],
    "GB": ["mobile", "mobile_number", "alt_phone"],
    "GB_fixed": ["telephone", "home_phone", "landline"],
    "DE": ["Telefon", "Handynummer", "mobilnummer"],
    "FR": ["téléphone", "portable", "telephone_portable"],
    "ES": ["teléfono", "móvil", "celular"],
    "IT": ["cellulare", "telefono", "numero_di_telefono"],
    "NL": ["telefoonnummer", "mobiel", "mobiele_nummer"],
    "SE": ["telefonnummer", "mobiltelefon", "mobil"],
    "PL": ["telefon", "numer_telefonu", "komórka"],
    "PT": ["telemóvel", "telefone", "numero_de_telefone"],
    "BR": ["whatsapp", "celular_whatsapp", "fone"],
    "IN": ["mobile_no", "ph_no", "contact_number"],
    "CA": ["cell", "cell_phone", "work_phone"],
    "AU": ["phoneNumber", "PhoneNumber", "phone-number"],
    "CH": ["PHONE_NUMBER", "secondary_phone", "sms_number"],
}
for _region, _keys in _PHONE_KEYS.items():
    for _key, _form in zip(_keys, PHONES[_region], strict=True):
        PHONE.append(catch("phone", {_key: _form}, _form))
PHONE += [
    catch("phone", {"billing_address": {"phone": PHONES["US"][0]}}, PHONES["US"][0]),
    catch("phone", {"shipping": {"phone": PHONES["DE"][1]}}, PHONES["DE"][1]),
    catch("phone", {"customer": {"default_address": {"phone": PHONES["CA"][0]}}}, PHONES["CA"][0]),
    catch("phone", {"billing_phone": PHONES["FR"][0]}, PHONES["FR"][0]),
    catch("phone", {"phonenumber": PHONES["NL"][2]}, PHONES["NL"][2]),
    catch("phone", {"msisdn": PHONES["IT"][2].lstrip("+")}, PHONES["IT"][2]),
    catch("phone", {"fax": PHONES["GB_fixed"][1]}, PHONES["GB_fixed"][1]),
    catch(
        "phone",
        {"phone_numbers": [PHONES["US"][2], PHONES["GB"][2]]},
        PHONES["US"][2],
        PHONES["GB"][2],
    ),
    catch("phone", {"phones": [{"type": "mobile", "number": PHONES["PL"][0]}]}, PHONES["PL"][0]),
    catch(
        "phone",
        {"profile": {"mobilePhone": PHONES["SE"][1], "primaryPhone": PHONES["SE"][0]}},
        PHONES["SE"][1],
        PHONES["SE"][0],
    ),
    catch("phone", {"tel": "tel:" + PHONES["ES"][2]}, PHONES["ES"][2]),
    catch("phone", {"telefono_contacto": "0034 612 34 53 90"}, PHONES["ES"][2]),
    catch(
        "phone", {"emergency_contact": {"name": "Sam", "phone": PHONES["AU"][0]}}, PHONES["AU"][0]
    ),
    catch(
        "phone", {"note_attributes": [{"name": "Phone", "value": PHONES["GB"][0]}]}, PHONES["GB"][0]
    ),
    catch("phone", {"note": f"Please call me on {PHONES['GB'][1]} after 6pm"}, PHONES["GB"][1]),
    catch("phone", {"comment": f"WhatsApp: {PHONES['BR'][1]}"}, PHONES["BR"][1]),
    catch("phone", {"message": f"ring me at {PHONES['US'][0]} tomorrow"}, PHONES["US"][0]),
    catch("phone", {"to": PHONES["IN"][2], "body": "Your code is ready"}, PHONES["IN"][2]),
    keep("phone", {"phone_verified": True, "phone_verified_at": "2024-03-01T09:00:00Z"}),
    keep("phone", {"phone_country_code": "US", "sms_opt_in": True}),
    keep("phone", {"phone_type": "mobile", "phone_count": 2}),
    keep("phone", {"order_number": "1002345678", "invoice": "INV-2024-000123"}),
    keep("phone", {"note": "Order 4006381333 shipped in 2 boxes of 12"}),
]

# -- IP addresses: Shopify client_details, Auth0 last_ip, Stripe, access logs ----------------------
IP: list[Case] = [
    catch("ip", {"ip": "203.0.113.42"}, "203.0.113.42"),
    catch("ip", {"ip_address": "198.51.100.7"}, "198.51.100.7"),
    catch("ip", {"ipAddress": "2001:db8:85a3::8a2e:370:7334"}, "2001:db8:85a3::8a2e:370:7334"),
    catch("ip", {"browser_ip": "192.0.2.19"}, "192.0.2.19"),
    catch(
        "ip",
        {"client_details": {"browser_ip": "198.51.100.23", "accept_language": "en"}},
        "198.51.100.23",
    ),
    catch("ip", {"last_ip": "2001:db8::1f"}, "2001:db8::1f"),
    catch("ip", {"last_login_ip": "203.0.113.201"}, "203.0.113.201"),
    catch("ip", {"client_ip": "198.51.100.88"}, "198.51.100.88"),
    catch("ip", {"remote_addr": "192.0.2.144"}, "192.0.2.144"),
    catch("ip", {"x_forwarded_for": "203.0.113.9, 198.51.100.2"}, "203.0.113.9", "198.51.100.2"),
    catch("ip", {"X-Forwarded-For": "2001:db8:1::ab9:c0a8:102"}, "2001:db8:1::ab9:c0a8:102"),
    catch("ip", {"signup_ip": "192.0.2.77"}, "192.0.2.77"),
    catch(
        "ip",
        {"IPv6": "2001:0db8:0000:0000:0000:ff00:0042:8329"},
        "2001:0db8:0000:0000:0000:ff00:0042:8329",
    ),
    catch("ip", {"context": {"ip": "198.51.100.14"}}, "198.51.100.14"),
    catch(
        "ip",
        {
            "logins": [
                {"at": "2024-06-01", "ip": "203.0.113.5"},
                {"at": "2024-06-02", "ip": "203.0.113.6"},
            ]
        },
        "203.0.113.5",
        "203.0.113.6",
    ),
    catch(
        "ip", {"log": "2024-06-12T10:00:01Z GET /account 200 from 198.51.100.61"}, "198.51.100.61"
    ),
    catch(
        "ip",
        {"note": "blocked login attempt from 2001:db8:4006:812::200e"},
        "2001:db8:4006:812::200e",
    ),
    catch("ip", {"IP-Adresse": "192.0.2.230"}, "192.0.2.230"),
    catch("ip", {"adresse_ip": "192.0.2.231"}, "192.0.2.231"),
    catch("ip", {"direccion_ip": "192.0.2.232"}, "192.0.2.232"),
    keep("ip", {"ip_country": "DE", "ip_city": "Berlin"}),
    keep("ip", {"app_version": "3.14.2", "os_version": "17.5.1"}),
    keep("ip", {"build": "10.0.19045.4529"}),
    keep("ip", {"ip_allowlist_enabled": True, "zip": "10115"}),
    keep("ip", {"tip_amount": "2.50", "shipping": "12.99"}),
]

# -- postal addresses: order blocks, CRM contacts, forms in many languages -------------------------
ADDRESS: list[Case] = [
    catch(
        "address",
        {
            "billing_address": {
                "first_name": "Ann",
                "address1": "1600 Amphitheatre Pkwy",
                "address2": "Bldg 41",
                "city": "Mountain View",
                "zip": "94043",
                "country_code": "US",
            }
        },
        "1600 Amphitheatre Pkwy",
        "Bldg 41",
    ),
    catch(
        "address",
        {"shipping_address": {"address1": "221B Baker Street", "city": "London"}},
        "221B Baker Street",
    ),
    catch(
        "address",
        {"customer": {"default_address": {"address1": "Kurfürstendamm 21"}}},
        "Kurfürstendamm 21",
    ),
    catch(
        "address",
        {"billing": {"address_1": "12 Rue de Rivoli", "address_2": "Apt 3"}},
        "12 Rue de Rivoli",
    ),
    catch(
        "address",
        {"street": ["742 Evergreen Terrace", "Unit 2"], "city": "Springfield"},
        "742 Evergreen Terrace",
    ),
    catch(
        "address",
        {"billing_details": {"address": {"line1": "510 Townsend St", "line2": "Floor 4"}}},
        "510 Townsend St",
        "Floor 4",
    ),
    catch("address", {"MailingStreet": "1 Market St Suite 300"}, "1 Market St Suite 300"),
    catch("address", {"address": "350 Fifth Avenue, New York, NY 10118"}, "350 Fifth Avenue"),
    catch("address", {"street_address": "4 Privet Drive"}, "4 Privet Drive"),
    catch("address", {"streetAddress": "31 Spooner Street"}, "31 Spooner Street"),
    catch("address", {"home_address": "10 Downing Street, London SW1A 2AA"}, "10 Downing Street"),
    catch(
        "address", {"mailing_address": {"street1": "77 Massachusetts Ave"}}, "77 Massachusetts Ave"
    ),
    catch("address", {"address_line_1": "2 Hanover Square"}, "2 Hanover Square"),
    catch("address", {"addressLine1": "88 Colin P Kelly Jr St"}, "88 Colin P Kelly Jr St"),
    catch("address", {"Straße": "Unter den Linden 77"}, "Unter den Linden 77"),
    catch("address", {"strasse": "Hauptstraße 5"}, "Hauptstraße 5"),
    catch("address", {"Anschrift": "Friedrichstraße 43, 10117 Berlin"}, "Friedrichstraße 43"),
    catch("address", {"adresse": "8 Avenue des Champs-Élysées"}, "8 Avenue des Champs-Élysées"),
    catch("address", {"dirección": "Calle Mayor 12, 3ºB"}, "Calle Mayor 12"),
    catch("address", {"domicilio": "Avenida de la Constitución 4"}, "Avenida de la Constitución 4"),
    catch("address", {"indirizzo": "Via del Corso 101"}, "Via del Corso 101"),
    catch("address", {"endereço": "Rua Augusta 1500"}, "Rua Augusta 1500"),
    catch("address", {"morada": "Rua do Ouro 44, 1100-063 Lisboa"}, "Rua do Ouro 44"),
    catch("address", {"adres": "Damrak 70"}, "Damrak 70"),
    catch("address", {"straat": "Kalverstraat 92"}, "Kalverstraat 92"),
    catch("address", {"gatuadress": "Drottninggatan 53"}, "Drottninggatan 53"),
    catch("address", {"ulica": "ul. Marszałkowska 104"}, "Marszałkowska 104"),
    catch(
        "address",
        {
            "addresses": [
                {"type": "home", "street": "9 Elm Row"},
                {"type": "work", "street": "1 Pier Rd"},
            ]
        },
        "9 Elm Row",
        "1 Pier Rd",
    ),
    catch(
        "address",
        {
            "shipping_address": {
                "address1": "5 Long Lane",
                "company": "Acme",
                "house_number": "5A",
                "delivery_instructions": "leave behind the blue gate",
            }
        },
        "5 Long Lane",
        "leave behind the blue gate",
    ),
    catch("address", {"traits.address.street": "16 Kings Road"}, "16 Kings Road"),
    keep("address", {"city": "Lisbon", "country": "PT", "zip": "1100-063"}),
    keep("address", {"shipping_address_country": "FR", "billing_address_country_code": "FR"}),
    keep("address", {"address_verified": True, "address_updated_at": "2024-01-02T03:04:05Z"}),
    keep(
        "address", {"postal_code": "SW1A 2AA", "province_code": "ON", "timezone": "Europe/London"}
    ),
    keep("address", {"billing_address_same_as_shipping": True, "address_type": "residential"}),
    keep("address", {"country_code": "SE", "locale": "sv-SE", "region": "EU"}),
    keep("address", {"website": "https://acme.example/about", "company": "Acme GmbH"}),
]

# -- dates of birth: many key spellings, many formats ----------------------------------------------
DOB: list[Case] = [
    catch("dob", {"dob": "1985-03-12"}, "1985-03-12"),
    catch("dob", {"DOB": "03/12/1985"}, "03/12/1985"),
    catch("dob", {"date_of_birth": "12.03.1985"}, "12.03.1985"),
    catch("dob", {"dateOfBirth": "1991-07-24T00:00:00Z"}, "1991-07-24"),
    catch("dob", {"DateOfBirth": "24/07/1991"}, "24/07/1991"),
    catch("dob", {"birthdate": "March 12, 1985"}, "March 12, 1985"),
    catch("dob", {"Birthdate": "1977-01-01"}, "1977-01-01"),
    catch("dob", {"birthday": "12 Mar 1985"}, "12 Mar 1985"),
    catch("dob", {"birth_date": "19850312"}, "19850312"),
    catch("dob", {"bday": "1990-02-28"}, "1990-02-28"),
    catch("dob", {"dateofbirth": "1988-11-30"}, "1988-11-30"),
    catch("dob", {"Date_of_Birth__c": "1979-06-15"}, "1979-06-15"),
    catch("dob", {"custom_fields": {"cf_date_of_birth": "1983-09-09"}}, "1983-09-09"),
    catch("dob", {"user_metadata": {"birthday": "1992-12-01"}}, "1992-12-01"),
    catch("dob", {"Geburtsdatum": "01.02.1970"}, "01.02.1970"),
    catch("dob", {"geburtstag": "17.08.1962"}, "17.08.1962"),
    catch("dob", {"date_de_naissance": "05/04/1987"}, "05/04/1987"),
    catch("dob", {"fecha_de_nacimiento": "23/10/1975"}, "23/10/1975"),
    catch("dob", {"fecha_nacimiento": "1975-10-23"}, "1975-10-23"),
    catch("dob", {"data_di_nascita": "14/02/1993"}, "14/02/1993"),
    catch("dob", {"geboortedatum": "30-06-1981"}, "30-06-1981"),
    catch("dob", {"födelsedatum": "1986-05-19"}, "1986-05-19"),
    catch("dob", {"data_urodzenia": "1994-03-08"}, "1994-03-08"),
    catch("dob", {"data_de_nascimento": "07/09/1989"}, "07/09/1989"),
    catch("dob", {"birthday": {"day": 12, "month": 3, "year": 1985}}, "1985"),
    catch("dob", {"born_on": "1969-07-20"}, "1969-07-20"),
    catch("dob", {"note": "DOB: 1984-02-29, verified by phone"}, "1984-02-29"),
    keep("dob", {"created_at": "1985-03-12T10:00:00Z", "first_order_date": "2019-07-24"}),
    keep("dob", {"birthday_reward_sent": True, "birthday_month_opt_in": False}),
    keep("dob", {"trial_ends_at": "2024-07-24", "renewal_date": "24/07/2025"}),
    keep("dob", {"last_seen": 1718000000, "age_verified": True}),
]

ART9_CATCH_SIMPLE = {
    # key: value  (EN, then the article's own wording, then DE/FR/ES/IT/NL/PL/SV/PT)
    "health": "type 2 diabetes",
    "health_conditions": "asthma",
    "medical_conditions": ["epilepsy", "migraine"],
    "medicalHistory": "hip replacement 2019",
    "diagnosis": "generalised anxiety disorder",
    "medications": "sertraline 50mg",
    "allergies": "penicillin",
    "disability": "wheelchair user",
    "disabilities": "hearing impaired",
    "blood_type": "AB-",
    "hiv_status": "positive",
    "mental_health": "depression",
    "pregnancy_status": "pregnant, due in August",
    "data_concerning_health": "chronic kidney disease",
    "sexual_orientation": "gay",
    "sex_life": "polyamorous",
    "racial_or_ethnic_origin": "Roma",
    "ethnicity": "Hispanic or Latino",
    "race": "Black or African American",
    "religion": "Muslim",
    "religious_beliefs": "Jehovah's Witness",
    "philosophical_beliefs": "humanist",
    "political_opinions": "supports the Green party",
    "political_party": "Labour",
    "trade_union_membership": "Unite the Union",
    "union_member": "IG Metall",
    "genetic_data": "BRCA1 carrier",
    "biometric_data": "faceprint-v2:8f3a",
    "Gesundheitsdaten": "Bluthochdruck",
    "Krankheiten": "Morbus Crohn",
    "Konfession": "römisch-katholisch",
    "Religionszugehörigkeit": "evangelisch",
    "Gewerkschaft": "ver.di",
    "sexuelle_orientierung": "bisexuell",
    "santé": "diabète",
    "données_de_santé": "asthme sévère",
    "orientation_sexuelle": "lesbienne",
    "origine_ethnique": "maghrébine",
    "opinions_politiques": "écologiste",
    "syndicat": "CGT",
    "salud": "hipertensión",
    "enfermedad": "fibromialgia",
    "religión": "católica",
    "orientación_sexual": "homosexual",
    "afiliación_sindical": "CCOO",
    "salute": "celiachia",
    "dati_sanitari": "diabete di tipo 1",
    "religione": "ebraica",
    "orientamento_sessuale": "gay",
    "gezondheid": "burn-out",
    "godsdienst": "hindoeïstisch",
    "seksuele_geaardheid": "homoseksueel",
    "vakbondslidmaatschap": "FNV",
    "zdrowie": "cukrzyca",
    "wyznanie": "prawosławne",
    "orientacja_seksualna": "biseksualna",
    "hälsa": "astma",
    "sexuell_läggning": "homosexuell",
    "fackmedlemskap": "Unionen",
    "saúde": "hipertensão",
    "religião": "evangélica",
    "orientação_sexual": "bissexual",
}


def _leaves(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _leaves(v)]
    return []


ART9: list[Case] = [catch("art9", {k: v}, *_leaves(v)) for k, v in ART9_CATCH_SIMPLE.items()]
ART9 += [
    catch(
        "art9",
        {"medical": {"conditions": ["asthma"], "medications": ["salbutamol inhaler"]}},
        "asthma",
        "salbutamol inhaler",
    ),
    catch(
        "art9",
        {"health": {"allergies": "peanuts", "notes": "carries EpiPen"}},
        "peanuts",
        "carries EpiPen",
    ),
    catch(
        "art9",
        {"profile": {"demographics": {"ethnicity": "Asian", "religion": "Buddhist"}}},
        "Asian",
        "Buddhist",
    ),
    catch("art9", {"user_metadata": {"healthConditions": ["coeliac disease"]}}, "coeliac disease"),
    catch("art9", {"HealthConditions": "ME/CFS"}, "ME/CFS"),
    catch("art9", {"health-data": "long covid"}, "long covid"),
    catch("art9", {"dietary_requirements_medical": "phenylketonuria"}, "phenylketonuria"),
    catch(
        "art9",
        {"patient": {"diagnoses": [{"code": "E11.9", "text": "type 2 diabetes"}]}},
        "E11.9",
        "type 2 diabetes",
    ),
    catch("art9", {"Religion__c": "Sikh"}, "Sikh"),
    catch("art9", {"hs_ethnicity": "Pacific Islander"}, "Pacific Islander"),
    catch("art9", {"special_category_data": {"trade_union": "GMB"}}, "GMB"),
    catch(
        "art9",
        {"fingerprint_template": "Rk1SACAyMAAAAAFiAAABPAFiAMUAxQEAAAAoJ"},
        "Rk1SACAyMAAAAAFiAAABPAFiAMUAxQEAAAAoJ",
    ),
    keep("art9", {"health_score": 87, "account_health": "green"}),
    keep(
        "art9",
        {"health_check_passed": True, "healthcheck_url": "https://status.example.com/health"},
    ),
    keep(
        "art9",
        {
            "unionid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            "race_results_url": "https://run.example/r/2024",
        },
    ),
    keep("art9", {"plan": "health-plus", "category": "health & beauty"}),
    keep("art9", {"language": "de", "newsletter_topics": ["sport", "travel"]}),
]

# -- secrets and credentials: Auth0/Okta/Firebase exports, integrations, logs ----------------------
SECRET: list[Case] = [
    catch("secret", {"password": PASSWORDS[0]}, PASSWORDS[0]),
    catch("secret", {"pwd": PASSWORDS[1]}, PASSWORDS[1]),
    catch("secret", {"passwd": PASSWORDS[2]}, PASSWORDS[2]),
    catch("secret", {"PassWord": PASSWORDS[3]}, PASSWORDS[3]),
    catch("secret", {"user_password": PASSWORDS[4]}, PASSWORDS[4]),
    catch(
        "secret",
        {"new_password": PASSWORDS[0], "password_confirmation": PASSWORDS[0]},
        PASSWORDS[0],
    ),
    catch("secret", {"passphrase": "purple monkey dishwasher 42"}, "purple monkey dishwasher 42"),
    catch("secret", {"Passwort": PASSWORDS[1]}, PASSWORDS[1]),
    catch("secret", {"mot_de_passe": PASSWORDS[2]}, PASSWORDS[2]),
    catch("secret", {"contraseña": PASSWORDS[3]}, PASSWORDS[3]),
    catch("secret", {"senha": PASSWORDS[4]}, PASSWORDS[4]),
    catch("secret", {"wachtwoord": PASSWORDS[0]}, PASSWORDS[0]),
    catch("secret", {"lösenord": PASSWORDS[1]}, PASSWORDS[1]),
    catch("secret", {"hasło": PASSWORDS[2]}, PASSWORDS[2]),
    catch(
        "secret",
        {"passwordHash": FIREBASE_HASH, "salt": "42xEC+ixf3L2lw=="},
        FIREBASE_HASH,
        "42xEC+ixf3L2lw==",
    ),
    catch("secret", {"password_hash": BCRYPT}, BCRYPT),
    catch("secret", {"credentials": {"password": {"value": PASSWORDS[3]}}}, PASSWORDS[3]),
    catch(
        "secret",
        {"credentials": {"recovery_question": {"question": "First pet?", "answer": "Fluffy-Kq"}}},
        "Fluffy-Kq",
    ),
    catch("secret", {"security_answer": "Springfield Elementary"}, "Springfield Elementary"),
    catch("secret", {"mothers_maiden_name": "Bouvier"}, "Bouvier"),
    catch("secret", {"pin": "482913"}, "482913"),
    catch("secret", {"mfa": {"totp_secret": TOTP_SEED}}, TOTP_SEED),
    catch("secret", {"otp_secret": TOTP_SEED}, TOTP_SEED),
    catch("secret", {"backup_codes": ["9f3k-2m7q", "x8v1-c4n6"]}, "9f3k-2m7q", "x8v1-c4n6"),
    catch("secret", {"recovery_codes": "7Q2M-9XKD 3VPL-8WRT"}, "7Q2M-9XKD", "3VPL-8WRT"),
    catch(
        "secret",
        {
            "identities": [
                {
                    "provider": "google-oauth2",
                    "access_token": GOOGLE_OAUTH,
                    "refresh_token": GOOGLE_REFRESH,
                }
            ]
        },
        GOOGLE_OAUTH,
        GOOGLE_REFRESH,
    ),
    catch("secret", {"accesstoken": JWT}, JWT),
    catch("secret", {"refreshToken": GOOGLE_REFRESH}, GOOGLE_REFRESH),
    catch("secret", {"id_token": JWT}, JWT),
    catch(
        "secret",
        {"session_token": "3c6e0b8a9c15224a8228b9a98ca1531d"},
        "3c6e0b8a9c15224a8228b9a98ca1531d",
    ),
    catch(
        "secret",
        {"sessionid": "k7qz2wm9xc4vb1nt6ry8lp3js5df0gah"},
        "k7qz2wm9xc4vb1nt6ry8lp3js5df0gah",
    ),
    catch(
        "secret",
        {"cookie": "sessionid=k7qz2wm9xc4vb1nt6ry8; csrftoken=Zq4vN2p0Yk8L"},
        "k7qz2wm9xc4vb1nt6ry8",
    ),
    catch(
        "secret",
        {"api_key": "9f8e7d6c5b4a39281706f5e4d3c2b1a0"},
        "9f8e7d6c5b4a39281706f5e4d3c2b1a0",
    ),
    catch(
        "secret", {"APIkey": "c2b1a09f8e7d6c5b4a39281706f5e4d3"}, "c2b1a09f8e7d6c5b4a39281706f5e4d3"
    ),
    catch("secret", {"x-api-key": "Hk7Qz2Wm9Xc4Vb1Nt6Ry8Lp3"}, "Hk7Qz2Wm9Xc4Vb1Nt6Ry8Lp3"),
    catch(
        "secret",
        {"client_secret": "GOCSPX-" + "Lk7Qz2Wm9Xc4Vb1Nt6Ry8Lp3Js"},
        "GOCSPX-Lk7Qz2Wm9Xc4Vb1Nt6Ry8Lp3Js",
    ),
    catch("secret", {"app_metadata": {"stripe_secret_key": STRIPE_LIVE}}, STRIPE_LIVE),
    catch(
        "secret",
        {"private_key": PRIVATE_KEY},
        "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
    ),
    catch(
        "secret",
        {"aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": AWS_SECRET},
        AWS_KEY_ID,
        AWS_SECRET,
    ),
    # secrets under innocent keys or inside free text: the value's shape is the only signal
    catch("secret", {"note": f"deploy with {AWS_KEY_ID} / {AWS_SECRET}"}, AWS_KEY_ID),
    catch("secret", {"integration": GH_PAT}, GH_PAT),
    catch("secret", {"comment": f"use {GH_FINE} for the repo"}, GH_FINE),
    catch("secret", {"webhook": SLACK_HOOK}, SLACK_HOOK),
    catch("secret", {"bot": SLACK_BOT}, SLACK_BOT),
    catch("secret", {"stripe": STRIPE_RESTRICTED}, STRIPE_RESTRICTED),
    catch("secret", {"signing": STRIPE_WHSEC}, STRIPE_WHSEC),
    catch("secret", {"maps": GOOGLE_KEY}, GOOGLE_KEY),
    catch("secret", {"llm": OPENAI}, OPENAI),
    catch("secret", {"llm_backup": ANTHROPIC}, ANTHROPIC),
    catch("secret", {"mailer": SENDGRID}, SENDGRID),
    catch("secret", {"registry": NPM}, NPM),
    catch("secret", {"ci": GITLAB}, GITLAB),
    catch("secret", {"shop": SHOPIFY_TOKEN}, SHOPIFY_TOKEN),
    catch("secret", {"sms_provider": f"twilio {TWILIO_SECRET}"}, TWILIO_SECRET),
    catch("secret", {"mail_provider": MAILGUN}, MAILGUN),
    catch("secret", {"ml": HF_TOKEN}, HF_TOKEN),
    catch("secret", {"debug": JWT}, JWT),
    catch(
        "secret",
        {"pem": PRIVATE_KEY},
        "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
    ),
    catch("secret", {"db": "postgres://app:Qz2Wm9Xc4Vb@db.internal:5432/shop"}, "Qz2Wm9Xc4Vb"),
    catch(
        "secret",
        {"store_url": "https://admin:Sup3rS3cret!@shop.example.com/wp-admin"},
        "Sup3rS3cret!",
    ),
    catch("secret", {"ftp": "ftp://upload:Kq9-hunter@files.example.net/in"}, "Kq9-hunter"),
    catch("secret", {"headers": "Authorization: Bearer " + GOOGLE_OAUTH}, GOOGLE_OAUTH),
    catch(
        "secret",
        {"request": {"headers": {"Authorization": "Basic YWRtaW46U3VwM3JTM2NyZXQ="}}},
        "YWRtaW46U3VwM3JTM2NyZXQ=",
    ),
    catch(
        "secret", {"log": f"POST /login user=ann password={PASSWORDS[4]} status=401"}, PASSWORDS[4]
    ),
    catch("secret", {"log_line": f"auth ok token={STRIPE_WHSEC[6:]} ip=-"}, STRIPE_WHSEC[6:]),
    catch(
        "secret",
        {"callback": f"https://app.example/cb?access_token={GOOGLE_OAUTH}&state=xyz"},
        GOOGLE_OAUTH,
    ),
    catch(
        "secret", {"payload": json.dumps({"user": "ann", "password": PASSWORDS[2]})}, PASSWORDS[2]
    ),
    catch("secret", {"env": f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}\nDEBUG=false"}, AWS_SECRET),
    keep("secret", {"tokens_used": 15234, "monthly_tokens_used": 880000, "token_limit": 1000000}),
    keep(
        "secret",
        {"password_updated_at": "2024-02-01T00:00:00Z", "password_last_changed": "2024-02-01"},
    ),
    keep("secret", {"password_reset_required": False, "has_password": True, "mfa_enabled": True}),
    keep("secret", {"two_factor_enabled": True, "api_version": "2024-06-20", "apiVersion": "v2"}),
    keep(
        "secret",
        {
            "identities": [
                {
                    "connection": "Username-Password-Authentication",
                    "provider": "auth0",
                    "user_id": "5f7c8ec7c33c6c004bbafe82",
                    "isSocial": False,
                }
            ]
        },
    ),
    keep(
        "secret",
        {
            "user_id": "auth0|5f7c8ec7c33c6c004bbafe82",
            "logins_count": 14,
            "last_login": "2024-06-12T10:11:12.000Z",
        },
    ),
    keep(
        "secret",
        {
            "localId": "ZY1rJK0eYLg8m2jkxEzLOiYeWiE3",
            "providerId": "google.com",
            "emailVerified": True,
        },
    ),
    keep("secret", {"key": "plan_tier", "secret_santa_opt_in": True, "keyboard_layout": "dvorak"}),
    keep("secret", {"sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}),
    keep("secret", {"commit": "9fceb02d0ae598e95dc970b74767f19372d61af8", "etag": 'W/"5e15153d"'}),
    keep(
        "secret",
        {
            "request_id": "req_8fK2nQ7xLm4vB9",
            "idempotency_key": "0f7b6f2c-6d1e-4b8a-9a43-1f2e3d4c5b6a",
        },
    ),
    keep(
        "secret",
        {
            "docs_url": "https://docs.example.com/guide?page=2&lang=en",
            "avatar": "https://cdn.example.com/a/93.png",
        },
    ),
    keep("secret", {"referrer": "https://www.google.com/search?q=blue+shirt"}),
]

# -- whole profiles: several systems' shapes at once -----------------------------------------------
PROFILE: list[Case] = [
    catch(
        "profile",
        {
            "id": 207119551,
            "email": "bob@example.com",
            "accepts_marketing": False,
            "phone": PHONES["US"][1],
            "note": f"VIP, ssn on file {SSNS[0]}",
            "addresses": [
                {
                    "address1": "Chestnut Street 92",
                    "city": "Louisville",
                    "zip": "40202",
                    "phone": PHONES["US"][0],
                }
            ],
        },
        PHONES["US"][1],
        SSNS[0],
        "Chestnut Street 92",
    ),
    catch(
        "profile",
        {
            "object": "customer",
            "id": "cus_NffrFeUfNV2Hib",
            "phone": PHONES["GB"][2],
            "address": {"line1": "8 Orchard Way", "postal_code": "EC1A 1BB", "country": "GB"},
            "tax_ids": {"data": [{"type": "gb_vat", "value": "GB123456789"}]},
            "invoice_settings": {"custom_fields": [{"name": "NI number", "value": NINO[1]}]},
        },
        PHONES["GB"][2],
        "8 Orchard Way",
        NINO[1],
    ),
    catch(
        "profile",
        {
            "Id": "0035e00000ABCDeAAP",
            "FirstName": "Maria",
            "MobilePhone": PHONES["IT"][1],
            "Birthdate": "1980-05-17",
            "Codice_Fiscale__c": CODICE_FISCALE[1],
            "MailingCity": "Roma",
        },
        PHONES["IT"][1],
        "1980-05-17",
        CODICE_FISCALE[1],
    ),
    catch(
        "profile",
        {
            "properties": {
                "mobilephone": PHONES["NL"][1],
                "date_of_birth": "1982-04-03",
                "hs_whatsapp_phone_number": PHONES["NL"][2],
                "lifecyclestage": "customer",
            }
        },
        PHONES["NL"][1],
        "1982-04-03",
        PHONES["NL"][2],
    ),
    catch(
        "profile",
        {
            "user_id": "auth0|abc",
            "last_ip": "198.51.100.99",
            "user_metadata": {"phone": PHONES["FR"][0], "address": "3 Place Bellecour, Lyon"},
            "app_metadata": {"roles": ["admin"], "api_token": "Zx8Cv7Bn6Mq5Wa4Se3Dr2Ft1"},
        },
        "198.51.100.99",
        PHONES["FR"][0],
        "3 Place Bellecour",
        "Zx8Cv7Bn6Mq5Wa4Se3Dr2Ft1",
    ),
    catch(
        "profile",
        {
            "employee": {
                "personal": {
                    "geburtsdatum": "14.07.1979",
                    "steuer_id": STEUER_ID[1],
                    "sozialversicherungsnummer": "65170839J003",
                },
                "bank": {"iban": IBANS["de"]},
                "konfession": "rk",
            }
        },
        "14.07.1979",
        STEUER_ID[1],
        "65170839J003",
        IBANS["de"],
    ),
    catch(
        "profile",
        {
            "ticket": {
                "id": 35436,
                "subject": "Refund",
                "via": {"channel": "web"},
                "requester": {"phone": PHONES["ES"][1]},
                "comments": [
                    {"body": f"Mi IBAN es {IBANS['es']}, gracias"},
                    {"body": f"DNI {DNI[0]}"},
                ],
            }
        },
        PHONES["ES"][1],
        IBANS["es"],
        DNI[0],
    ),
    keep(
        "profile",
        {
            "id": 450789469,
            "order_number": 1001,
            "name": "#1001",
            "total_price": "199.65",
            "currency": "USD",
            "financial_status": "paid",
            "created_at": "2008-01-10T11:00:00-05:00",
            "line_items": [
                {"sku": "IPOD2008PINK", "quantity": 1, "price": "199.00", "variant_id": 39072856}
            ],
            "tags": "VIP, wholesale",
            "email": "bob.norman@mail.example.com",
        },
    ),
    keep(
        "profile",
        {
            "object": "customer",
            "id": "cus_NffrFeUfNV2Hib",
            "created": 1680893993,
            "currency": "usd",
            "delinquent": False,
            "invoice_prefix": "0759376C",
            "livemode": False,
            "balance": 0,
        },
    ),
    keep(
        "profile",
        {
            "type": "user",
            "id": "5714dd359a3fd47136000001",
            "signed_up_at": 1461075801,
            "custom_attributes": {"paid_subscriber": True, "monthly_spend": 155.5, "team_mates": 3},
            "tags": {"type": "tag.list", "tags": [{"id": "17513", "name": "beta"}]},
        },
    ),
    keep(
        "profile",
        {
            "uuid": "550e8400-e29b-41d4-a716-446655440000",
            "plan": "enterprise",
            "seats": 25,
            "mrr_cents": 129900,
            "coupon": "SUMMER2024",
            "discount_pct": 15,
            "score": 0.93,
        },
    ),
    keep(
        "profile",
        {"first_name": "Ada", "last_name": "Lovelace", "company": "Analytical Engines Ltd"},
    ),
]

# -- e-mail: kept in any spelling, also in lists and nested (policy's stated choice) ---------------
EMAIL: list[Case] = [
    keep("email", {"email": "ann@example.com", "Email": "Ann@Example.com"}),
    keep("email", {"email_address": "ann@example.com", "emailAddress": "ann@example.com"}),
    keep("email", {"email_addresses": ["a@example.com", "b@example.org"]}),
    keep(
        "email", {"billing_email_address": "billing@example.com", "billing_email": "ap@example.com"}
    ),
    keep("email", {"emails": [{"value": "c@example.com", "primary": True, "type": "work"}]}),
    keep("email", {"contact": {"email": "d@example.com"}, "E-Mail": "e@example.de"}),
    keep("email", {"email_address_verified": True, "email_verified": True}),
    keep("email", {"courriel": "f@example.fr", "correo_electronico": "g@example.es"}),
]

# -- free text a product writes (must survive) -----------------------------------------------------
TEXT: list[Case] = [
    keep("text", {"note": "Order #1001 shipped via UPS 1Z999AA10123456784 on 2024-06-01"}),
    keep("text", {"comment": "Price changed from 1,299.00 to 1,199.00 (save 8.3%)"}),
    keep("text", {"message": "Version 4.5.1 build 20240612 is live for 12,500 users"}),
    keep("text", {"note": "Call scheduled for 14:30 CET on 2024-06-12, room 4521"}),
    keep("text", {"body": "Ticket 5123456 merged into 5123789 by the agent"}),
    keep("text", {"csv": "sku,qty,price\nIPOD2008PINK,1,199.00\nTSHIRT-L-BLU,3,19.99"}),
    keep("text", {"log": "2024-06-12T10:00:01Z GET /api/v2/orders?page=3 200 12ms"}),
    keep("text", {"payload": '{"plan": "pro", "seats": 5, "trial": false}'}),
    keep("text", {"description": "Pack of 4, 250 ml each, EAN 4006381333931"}),
    keep("text", {"feedback": "Loved the blue shirt, size L fits perfectly!"}),
]

# Cases written before reading docs/policy.md that contradict a trade-off it states; each is
# asserted to still behave as documented (test_corpus_independent), not counted as a loss.
DOCUMENTED_CHOICE: list[tuple[Case, str]] = [
    (
        keep(
            "card", {"card": {"brand": "visa", "last4": "3047", "exp_month": 12, "exp_year": 2027}}
        ),
        "card expiry is dropped with the number (section 1: 'number, CVV/CVC, expiry')",
    ),
    (
        keep("phone", {"phone_ext": "204"}),
        "any phone-like key is hashed (section 1, phones), an extension too",
    ),
    (
        keep("art9", {"political_news_opt_in": False}),
        "special categories ignore the qualifiers (section 1: 'health_status_verified is still"
        " health data'), and a boolean there is data",
    ),
]

CORPUS: list[Case] = (
    CARD
    + SSN
    + NATIONAL
    + BANK
    + PHONE
    + IP
    + ADDRESS
    + DOB
    + ART9
    + SECRET
    + PROFILE
    + EMAIL
    + TEXT
)


def counts() -> dict[tuple[str, str], tuple[int, int]]:
    """(category, expect) -> (cases, failures) under the default policy."""
    from tests.privacy.corpus import outcome

    table: dict[tuple[str, str], tuple[int, int]] = {}
    for case in CORPUS:
        n, bad = table.get((case.category, case.expect), (0, 0))
        table[case.category, case.expect] = (n + 1, bad + (not outcome(case)[0]))
    return dict(sorted(table.items()))


if __name__ == "__main__":
    for (category, expect), (n, bad) in counts().items():
        word = "misses" if expect == "catch" else "losses"
        print(f"{category:12} {expect:6} {n:4} cases  {bad} {word}")
