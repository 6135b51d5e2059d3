"""Storage of clients, grants and upstream sessions behind IStorage."""

from authproxy.storage.interface import IStorage, StorageFull

__all__ = ["IStorage", "StorageFull"]
