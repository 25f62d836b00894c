"""POP3 front end (RFC 1939, RFC 2449, RFC 2595 STLS, RFC 5034 SASL): docs/pop3.md."""
