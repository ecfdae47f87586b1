"""NetworkPolicy evaluation over a rendering (one namespace, label selectors): would the
overlay's policies let a source open a port on a destination?"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tests.deploy.k8s import Doc, label_selector_matches, of_kind


@dataclass(frozen=True)
class Endpoint:
    labels: Mapping[str, str] | None  # None: outside the cluster (an IP address)
    namespace_labels: Mapping[str, str] | None = None  # None: the overlay's own namespace


def _peer_matches(peer: Doc, endpoint: Endpoint) -> bool:
    if "ipBlock" in peer:
        return endpoint.labels is None
    if endpoint.labels is None:
        return False
    if "namespaceSelector" in peer:
        if endpoint.namespace_labels is None:
            return False
        if not label_selector_matches(peer["namespaceSelector"], endpoint.namespace_labels):
            return False
    elif endpoint.namespace_labels is not None:
        return False  # a bare podSelector means pods of this namespace only
    return label_selector_matches(peer.get("podSelector"), endpoint.labels)


def _rule_allows(rule: Doc, peers_key: str, peer: Endpoint, port: int, protocol: str) -> bool:
    peers = rule.get(peers_key)
    if peers is not None and not any(_peer_matches(p, peer) for p in peers):
        return False
    ports = rule.get("ports")
    if ports is None:
        return True
    return any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)


def _direction_allows(
    policies: list[Doc], pod: Mapping[str, str], direction: str, peer: Endpoint, port: int, protocol: str
) -> bool:
    selecting = [
        p
        for p in policies
        if direction in p["spec"].get("policyTypes", ["Ingress"])
        and label_selector_matches(p["spec"].get("podSelector"), pod)
    ]
    if not selecting:
        return True  # no policy isolates this pod in this direction
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    return any(
        _rule_allows(rule, peers_key, peer, port, protocol)
        for policy in selecting
        for rule in policy["spec"].get(key) or []
    )


def allowed(
    docs: list[Doc], source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    """Would the overlay's NetworkPolicies let ``source`` open ``port`` on ``destination``?"""
    policies = of_kind(docs, "NetworkPolicy")
    if source.labels is not None and source.namespace_labels is None:
        if not _direction_allows(policies, source.labels, "Egress", destination, port, protocol):
            return False
    if destination.labels is not None and destination.namespace_labels is None:
        if not _direction_allows(policies, destination.labels, "Ingress", source, port, protocol):
            return False
    return True
