"""In charge of legacy email interop (DESIGN.md §8): an SMTP gateway both ways that never
becomes a spoofing relay.

    mx          MX / address / TXT lookups (dnspython), static override for tests
    dkim_keys   the domain's DKIM key, signing, verifying, the DNS records to publish
    spf         SPF (RFC 7208, by pyspf) of the connecting peer, through our resolver
    dmarc       DMARC (RFC 7489): the From domain's policy and SPF/DKIM alignment
    mime        wsemail message <-> RFC 5322/MIME
    outbound    the relay's fallback: delivery by SMTP to MX hosts, STARTTLS, DKIM
    inbound     the aiosmtpd listener: local recipients only, size and rate limits,
                forged-sender refusal, SPF/DKIM/DMARC recorded as "legacy" provenance
    submission  the submission port for mail programs (RFC 6409): STARTTLS, AUTH
                PLAIN/LOGIN, MAIL FROM = the user, then the path of a SOAP Send
    plugins     the server plug-ins `smtp-outbound`, `smtp-inbound`, `smtp-submission`
"""
