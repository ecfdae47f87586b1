"""TLS where traffic leaves the cluster: in prod the public gRPC API and the relay serve
certificates from Secrets mounted read-only and whole (a renewal reaches the files), the probes
avoid the TLS listeners (the kubelet's gRPC probe speaks plaintext), and in-cluster render nodes
verify the relay against a CA bundle. Dev serves plaintext and its nodes know it.

The optional cert-manager component is rendered into a copy of the prod overlay exactly as the
guide says to add it; its objects are custom resources (no Kubernetes schema), so their fields
are checked here against what the rest of the overlay mounts and dials."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import k8s, kubectl, mounts, secrets

Doc = dict[str, Any]
TLS_KEYS = ("tls.crt", "tls.key")  # a kubernetes.io/tls Secret, as cert-manager writes it
CA_KEY = "ca.crt"
COMPONENT = "../../components/cert-manager"
COMMENTED = f"# components:\n#   - {COMPONENT}\n"


def _source(docs: list[Doc], service: str, field: str) -> mounts.Source:
    workload, container = k8s.service_container(docs, service)
    value = getattr(k8s.service_settings(docs, service), field)
    source, problems = mounts.file_source(k8s.pod_spec(workload), container, str(value))
    assert source is not None and not problems, problems
    return source


def _tls_ports() -> list[k8s.Port]:
    return [port for port in k8s.SERVICES["gateway"].ports if port.tls]


def _relay_port() -> k8s.Port:
    (relay,) = [p for p in _tls_ports() if p.name == "relay"]
    return relay


# -- the gateway's listeners ---------------------------------------------------------------------
def test_prod_serves_tls_on_the_public_grpc_api_and_the_relay_from_mounted_secrets(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["prod"]
    settings = k8s.service_settings(docs, "gateway")
    secret_of = {}
    assert {p.name for p in _tls_ports()} == {"grpc", "relay"}
    for port in _tls_ports():
        assert port.serves_tls(settings), port.name
        assert port.tls is not None
        cert, key = (_source(docs, "gateway", field) for field in port.tls)
        assert (cert.kind, key.kind) == ("secret", "secret")
        assert cert.name == key.name and (cert.key, key.key) == TLS_KEYS
        assert cert.mount["readOnly"] is True and "subPath" not in cert.mount
        secret_of[port.name] = cert.name
    assert secret_of["grpc"] != secret_of["relay"], "the relay's certificate is not the public API's"
    # No probe may ask a TLS listener: the kubelet's gRPC probe cannot speak TLS.
    _, container = k8s.service_container(docs, "gateway")
    tls_numbers = {getattr(settings, p.port_field) for p in _tls_ports()}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe].get("grpc", {}).get("port") not in tls_numbers, probe


def test_dev_serves_plaintext(rendered: dict[str, list[Doc]]) -> None:
    settings = k8s.service_settings(rendered["dev"], "gateway")
    assert not any(port.serves_tls(settings) for port in _tls_ports())
    workload, _ = k8s.service_container(rendered["dev"], "gateway")
    assert not any("secret" in v for v in k8s.pod_spec(workload)["volumes"])


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_render_nodes_dial_the_relay_the_way_it_serves(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    relay_tls = _relay_port().serves_tls(k8s.service_settings(docs, "gateway"))
    render = k8s.service_settings(docs, "render")
    assert render.insecure is (not relay_tls)
    if not relay_tls:
        return
    # The node verifies the name it dials (talos-relay), which only a CA of the operator's own
    # can certify: the bundle comes from a mounted key, not the system roots.
    assert render.ca_file is not None
    bundle = _source(docs, "render", "ca_file")
    assert bundle.key == CA_KEY and bundle.kind in ("configMap", "secret")
    # Render pods never see the relay's private key.
    gateway_secrets = {_source(docs, "gateway", field).name for p in _tls_ports() for field in p.tls or ()}
    render_workload, _ = k8s.service_container(docs, "render")
    for volume in k8s.pod_spec(render_workload)["volumes"]:
        assert volume.get("secret", {}).get("secretName") not in gateway_secrets, volume["name"]


def test_a_probe_on_a_tls_port_and_badly_mounted_certificates_are_caught(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = copy.deepcopy(rendered["prod"])
    workload, container = k8s.service_container(docs, "gateway")
    assert k8s.check_container(workload, container, "gateway", docs) == []

    container["readinessProbe"] = {"grpc": {"port": 50051}}
    problems = k8s.check_container(workload, container, "gateway", docs)
    assert any("serves TLS: the kubelet's gRPC probe speaks plaintext" in p for p in problems), problems
    container["readinessProbe"] = {"httpGet": {"port": "http", "path": "/healthz"}}

    (relay_mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/talos/relay-tls"]
    relay_mount["subPath"] = "tls.crt"
    relay_mount["readOnly"] = False
    problems = k8s.check_container(workload, container, "gateway", docs)
    assert any("TLS_CERT_FILE" in p and "subPath" in p for p in problems), problems
    assert any("TLS_KEY_FILE" in p and "not mounted read-only" in p for p in problems), problems
    del relay_mount["subPath"]
    relay_mount["readOnly"] = True

    config = k8s.named(docs, "ConfigMap", container["envFrom"][0]["configMapRef"]["name"])["data"]
    config["TALOS_GATEWAY_GRPC_TLS_CERT_FILE"] = "/etc/ssl/certs/talos.crt"
    del config["TALOS_GATEWAY_RELAY_TLS_KEY_FILE"]
    problems = k8s.check_container(workload, container, "gateway", docs)
    assert any("GRPC_TLS_CERT_FILE=/etc/ssl/certs/talos.crt: not on any volume" in p for p in problems)
    assert any("relay: TLS needs both" in p for p in problems), problems


def test_the_file_check_follows_items_and_projected_volumes() -> None:
    container = {"volumeMounts": [{"name": "ca", "mountPath": "/etc/ca", "readOnly": True}]}
    projected = {
        "sources": [{"configMap": {"name": "bundle", "items": [{"key": "ca.crt", "path": "roots.pem"}]}}]
    }
    pod = {"volumes": [{"name": "ca", "projected": projected}]}
    source, problems = mounts.file_source(pod, container, "/etc/ca/roots.pem")
    assert source is not None and (source.kind, source.name, source.key) == ("configMap", "bundle", "ca.crt")
    assert not problems
    assert mounts.file_source(pod, container, "/etc/ca/ca.crt")[0] is None
    pod = {"volumes": [{"name": "ca", "emptyDir": {}}]}
    assert "no Secret or ConfigMap key" in mounts.file_source(pod, container, "/etc/ca/ca.crt")[1][0]


# -- the optional cert-manager component ---------------------------------------------------------
@pytest.fixture(scope="module")
def with_cert_manager(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    """The prod overlay with the component added as its kustomization's comment says."""
    tree = tmp_path_factory.mktemp("with-cert-manager") / "k8s"
    shutil.copytree(k8s.K8S, tree)
    kustomization = tree / "overlays" / "prod" / "kustomization.yaml"
    text = kustomization.read_text()
    assert COMMENTED in text, "the prod overlay shows how to add the component"
    kustomization.write_text(text.replace(COMMENTED, COMMENTED.replace("# ", "").replace("#", "")))
    return k8s.build(tree / "overlays" / "prod", kubectl.kustomize_command(kubectl.OLDEST))


def _added(with_cert_manager: list[Doc], prod: list[Doc]) -> list[Doc]:
    added = [d for d in with_cert_manager if d not in prod]
    assert [d for d in with_cert_manager if d in prod] == prod, "the component changes nothing else"
    return added


GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")
SECONDS = {"h": 3600, "m": 60, "s": 1}
CERTIFICATE_FIELDS = {
    "secretName", "dnsNames", "ipAddresses", "uris", "emailAddresses", "commonName", "subject",
    "literalSubject", "duration", "renewBefore", "renewBeforePercentage", "privateKey", "usages",
    "issuerRef", "isCA", "secretTemplate", "keystores", "revisionHistoryLimit", "encodeUsagesInRequest",
    "additionalOutputFormats", "nameConstraints", "otherNames", "signatureAlgorithm",
}  # fmt: skip
USAGES = {
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
    "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc",
}  # fmt: skip


def seconds(duration: str) -> float:
    """A Go duration as cert-manager reads it (``2160h``, ``1h30m``)."""
    parts = GO_DURATION.findall(duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration}"
    return sum(float(n) * SECONDS[u] for n, u in parts)


def test_the_component_adds_only_a_certificate_and_its_issuer(
    with_cert_manager: list[Doc], rendered: dict[str, list[Doc]]
) -> None:
    added = _added(with_cert_manager, rendered["prod"])
    assert sorted(d["kind"] for d in added) == ["Certificate", "Issuer"]
    assert all(d["apiVersion"] == "cert-manager.io/v1" for d in added)
    assert secrets.secret_problems(with_cert_manager) == []


def certificate_problems(docs: list[Doc]) -> list[str]:
    """The relay's Certificate against what the overlay mounts and dials (empty: fine)."""
    (namespace,) = k8s.of_kind(docs, "Namespace")
    ns = namespace["metadata"]["name"]
    (certificate,) = k8s.of_kind(docs, "Certificate")
    spec = certificate["spec"]
    problems = []
    if certificate["metadata"].get("namespace") != ns:
        problems.append("not in the overlay's namespace: its Secret would not be beside the gateway")
    if not set(spec) <= CERTIFICATE_FIELDS:
        problems.append(f"unknown fields {sorted(set(spec) - CERTIFICATE_FIELDS)}")

    relay = _relay_port()
    assert relay.tls is not None
    mounted = _source(docs, "gateway", relay.tls[0]).name
    if spec.get("secretName") != mounted:
        problems.append(f"secretName {spec.get('secretName')} is not {mounted}, which the gateway mounts")

    # In-cluster nodes dial the headless Service by the name in their settings (any of its forms).
    (relay_address,) = k8s.service_settings(docs, "render").relay.split(",")
    service = relay_address.rsplit(":", 1)[0].split(".")[0]
    assert k8s.named(docs, "Service", service)["spec"]["clusterIP"] == "None"
    in_cluster = {service, f"{service}.{ns}", f"{service}.{ns}.svc", f"{service}.{ns}.svc.cluster.local"}
    names = set(spec.get("dnsNames", []))
    problems += [f"no DNS name {name} (in-cluster nodes dial it)" for name in sorted(in_cluster - names)]
    if not [n for n in names - in_cluster if "." in n]:
        problems.append("no public relay name (outside contributors dial it)")

    usages = set(spec.get("usages", []))
    if "server auth" not in usages or not usages <= USAGES:
        problems.append(f"usages {sorted(usages)}: server auth, from cert-manager's list")
    if not 0 < seconds(spec["renewBefore"]) < seconds(spec["duration"]):
        problems.append("renewBefore is not within duration")
    if spec.get("privateKey", {}).get("algorithm") not in ("RSA", "ECDSA", "Ed25519"):
        problems.append(f"privateKey {spec.get('privateKey')}")

    ref = spec["issuerRef"]
    if ref.get("group", "cert-manager.io") != "cert-manager.io" or ref.get("kind") != "Issuer":
        problems.append(f"issuerRef {ref}: the component's own Issuer")
    elif k8s.named(docs, "Issuer", ref["name"])["spec"]["ca"]["secretName"] == spec.get("secretName"):
        problems.append("the CA's key pair and the relay's are one Secret")
    return problems


def test_the_relay_certificate_is_the_secret_the_gateway_mounts_for_every_name_nodes_dial(
    with_cert_manager: list[Doc],
) -> None:
    assert certificate_problems(with_cert_manager) == []
    assert not k8s.of_kind(with_cert_manager, "Secret"), "the CA's key pair is only referenced"


def test_the_certificate_check_sees_a_missing_name_and_a_secret_nobody_mounts(
    with_cert_manager: list[Doc],
) -> None:
    docs = copy.deepcopy(with_cert_manager)
    (certificate,) = k8s.of_kind(docs, "Certificate")
    certificate["spec"]["dnsNames"].remove("talos-relay.talos.svc")
    certificate["spec"]["secretName"] = "talos-relay-cert"
    certificate["spec"]["renewBefore"] = "4000h"
    problems = certificate_problems(docs)
    assert any("no DNS name talos-relay.talos.svc " in p for p in problems), problems
    assert any("secretName talos-relay-cert is not talos-relay-tls" in p for p in problems), problems
    assert any("renewBefore" in p for p in problems), problems
    with pytest.raises(AssertionError, match="not a duration"):
        seconds("90d")


def test_the_component_s_file_names_its_own_path() -> None:
    component = k8s.K8S / "overlays" / "prod" / Path(COMPONENT)
    assert (component.resolve() / "kustomization.yaml").is_file()
    assert "kind: Component" in (component / "kustomization.yaml").read_text()
