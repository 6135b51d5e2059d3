"""OAuth Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document).

A client may use an https URL as its ``client_id``; its metadata (name, redirect URIs,
grant types) is the JSON document served at that URL. ``url`` says which client_ids are
such URLs, ``addresses`` which network addresses may be fetched (SSRF rules), ``fetch``
gets a document, ``document`` turns it into a client and ``cache`` keeps the results.
``authproxy.authserver.clients.ClientResolver`` is where they meet the endpoints.
"""
