"""Signing keys and HMAC secrets: the KeyRing, its watcher, signing, the key tool."""
