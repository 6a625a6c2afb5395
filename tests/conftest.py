"""Suite-wide settings."""

import logging

logging.getLogger("kazoo").setLevel(logging.ERROR)  # reconnects during fault tests are expected
