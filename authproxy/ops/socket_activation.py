"""systemd socket activation: ``systemd:`` listen endpoints checked against what systemd passed.

Twisted's ``systemd:`` endpoint looks its descriptor up in what systemd passed
(``LISTEN_FDS``/``LISTEN_FDNAMES``, read by ``twisted.python.systemd.ListenFDs``); a name
or index that is not there fails as a bare ``KeyError`` or ``list index out of range``.
``systemd_listen_problem`` says instead, in one line, which socket is missing and what was
passed, so that the operator looks at the socket unit (``FileDescriptorName=``) or at how
the service was started.
"""

from __future__ import annotations

from twisted.python.systemd import ListenFDs

_PREFIX = "systemd:"


def systemd_listen_problem(description: str, fds: ListenFDs | None = None) -> str | None:
    """Why the ``systemd:`` endpoint ``description`` has no inherited socket, or None.

    ``fds`` defaults to what Twisted's ``systemd:`` parser holds: it read (and removed)
    ``LISTEN_FDS`` when ``twisted.internet.endpoints`` was imported, so a second
    ``ListenFDs.fromEnvironment()`` would find nothing.
    Descriptions of other endpoint types, and malformed ones (Twisted's parser words
    those), are None.
    """
    if not description.startswith(_PREFIX):
        return None
    options = dict(
        part.split("=", 1) for part in description[len(_PREFIX) :].split(":") if "=" in part
    )
    if fds is None:
        from twisted.internet.endpoints import _SystemdParser

        fds = _SystemdParser._sddaemon
    names = fds.inheritedNamedDescriptors()
    passed = ", ".join(f'"{n}"' for n in names) if names else "none"
    if "name" in options and "index" not in options:
        if options["name"] not in names:
            return (
                f'"{description}": systemd passed no socket named "{options["name"]}" '
                f"(LISTEN_FDNAMES: {passed}; the socket unit's FileDescriptorName= must match, "
                "and the service must be started by its socket unit)"
            )
    elif "index" in options and "name" not in options and options["index"].isdigit():
        count = len(fds.inheritedDescriptors())
        if int(options["index"]) >= count:
            return (
                f'"{description}": systemd passed no socket at index {options["index"]} '
                f"({count} passed; the service must be started by its socket unit)"
            )
    return None
