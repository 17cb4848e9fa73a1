"""In charge of domain rules both sides share, above the protocol and the PKI: end-to-end
provenance of relayed messages (`provenance`) and form documents, approval chains and signed
form wheels (`forms`). The server and the client import this layer; it imports neither.
"""
