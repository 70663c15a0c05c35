"""relay.message.domain_fault: a domain is refused at submission exactly when delivery could never ask DNS
for it (dnspython refuses the name before any query) or when it is an address literal delivery cannot read."""

from __future__ import annotations

import ipaddress

import dns.exception
import dns.name
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.message import address_fault, domain_fault

_LABEL_CHARS = st.sampled_from(list("abcXYZ019-_") + ["é", "ü", "ß", "\u200d", "\u3002", "\\", "*", "%", " ", "Ⅻ"])
_LABEL = st.text(_LABEL_CHARS, min_size=0, max_size=70) | st.sampled_from(["a" * 63, "a" * 64, "xn--zz", "xn--"])
_DOMAIN = st.lists(_LABEL, min_size=1, max_size=5).map(".".join)


def deliverable_domain(domain: str) -> bool:
    """The reference, independent of relay.message: an IP address literal as delivery reads it, else a name
    dnspython (which delivery asks) takes."""
    if domain.startswith("[") and domain.endswith("]"):
        text = domain[1:-1]
        try:
            ipaddress.ip_address(text[5:] if text.lower().startswith("ipv6:") else text)
        except ValueError:
            return False
        return True
    try:
        dns.name.from_text(domain)
    except (dns.exception.SyntaxError, dns.name.NameTooLong, dns.name.IDNAException):
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(_DOMAIN)
def test_a_domain_is_refused_exactly_when_dnspython_refuses_it(domain):
    """The fast path for plain ASCII names must not accept what DNS cannot hold, nor refuse what it can."""
    assert (domain_fault(domain) is None) == deliverable_domain(domain), domain


@pytest.mark.parametrize(
    ("domain", "refused"),
    [
        ("example.com", False),
        ("mail.example.com.", False),  # absolute: DNS reads it so
        ("ex_ample.example", False),
        ("bücher.example", False),
        ("d" * 63 + ".example", False),
        ("d" * 64 + ".example", True),
        ("a..example", True),
        (".example", True),
        ("\u200d.example", True),
        ("[192.0.2.1]", False),
        ("[IPv6:2001:db8::1]", False),
        ("[ipv6:2001:db8::1]", False),
        ("[192.0.2.300]", True),
        ("[mail.example]", True),
        ("[]", True),
    ],
)
def test_domains(domain, refused):
    assert (domain_fault(domain) is not None) is refused
    assert (address_fault(f"me@{domain}") is not None) is refused


def test_an_address_without_a_domain_is_left_to_the_address_checks():
    assert address_fault("postmaster") is None  # RCPT TO:<postmaster> is its own rule (RFC 5321 §4.5.1)
