from tests.support.floor import (  # noqa: F401 - fixtures
    cheap_password_hashing,
    db,
    db_template,
    live,
    make_live,
    secure,
    settings,
)
