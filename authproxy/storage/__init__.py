"""What authproxy persists, one small interface per concern, composed into a Storage."""

from authproxy.storage.capacity import StorageFull
from authproxy.storage.composite import Storage

__all__ = ["Storage", "StorageFull"]
