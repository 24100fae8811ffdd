"""Data movement: the daaas PKI, TLS contexts, the archive-side source endpoint and the DMTS.

- `dms.pki`: a CA, certificates for services, hosts and users, revocation lists.
- `dms.tls`: server and client `ssl.SSLContext`s built from the PKI, and `TlsConfig`.
- `dms.paths`: safe resolution of request paths under a served root.
- `dms.checksum`: adler32/md5/sha-256 streaming, RFC 3230 `Digest`/`Want-Digest`.
- `dms.manifest`: JSON manifests of a directory (path, size, mode, mtime, checksum).
- `dms.source`: the HTTPS source endpoint over a plain directory tree (Range, Digest, manifests).
- `dms.dmts`: the destination endpoint speaking HTTP third-party copy in pull mode.
"""
