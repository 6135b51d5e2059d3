"""Public test helpers for authproxy and for projects that test against it (like treq.testing).

Implementation lives in private modules; this module re-exports the supported names.
"""

from authproxy.testing.keys import KubeletDir, ec_pem, ed_pem, hmac_secret

__all__ = ["KubeletDir", "ec_pem", "ed_pem", "hmac_secret"]
