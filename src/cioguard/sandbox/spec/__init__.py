"""Customer.io's published Track API specification, kept verbatim as package data.

``customerio-track-openapi.json`` is the OpenAPI 3.1 document Customer.io publishes at
``https://docs.customer.io/files/journeys-track.json``. These machines cannot reach that host, so it
was copied from the project's ``shared/spec/`` copy, itself taken verbatim from the public mirror
GitHub ``api-evangelist/customer-io`` (``openapi/_original/``, commit
``3662772bc244458c57def64291f38c8f9148cc1a``) and cross-checked against
``distilled-mirror/spec-mirror-customerio`` (``specs/journeys-track.json``).

sha256 ``69e9a74c06f63e7a16ffc663bb025ff7459b5bf42fcb5c3be1ff861868bf2a60`` (checked by
``tests/sandbox/test_contract.py``). Never edit the file: where the sandbox reads the spec
differently (it is narrower than Customer.io's docs in places), the amendment is made in memory by
:mod:`cioguard.sandbox.openapi`, with its reason beside it.
"""

SPEC_FILE = "customerio-track-openapi.json"

SPEC_SHA256 = "69e9a74c06f63e7a16ffc663bb025ff7459b5bf42fcb5c3be1ff861868bf2a60"
