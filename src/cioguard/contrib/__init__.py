"""Framework integrations: Django, Flask and FastAPI, each imported only by its application.

:mod:`cioguard.contrib.django`, :mod:`cioguard.contrib.flask` and :mod:`cioguard.contrib.fastapi`
each need their extra (``pip install 'cioguard[django]'`` ...). They sit above the producer and
the webhook intake in the import layers, and nothing in cioguard imports them.
"""
