from tests.support.floor import *  # noqa: F403 - the floor's fixtures
