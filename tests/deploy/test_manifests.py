"""The Kubernetes overlays: rendered by kustomize offline, validated against the Kubernetes 1.30
schemas (kubernetes-validate, strict), and checked against what each service's code reads."""

from __future__ import annotations

import copy
import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import SchemaNotFoundError

from talos_common import settings as talos_settings
from tests.deploy import k8s, netpol, secrets
from tests.deploy.netpol import Endpoint

Doc = dict[str, Any]


def overlay_params() -> list[Any]:
    return [pytest.param(o, id=o) for o in k8s.OVERLAYS]


# -- rendering and schema ---------------------------------------------------------------------
@pytest.mark.parametrize("overlay", overlay_params())
def test_overlay_renders_and_validates_against_kubernetes_1_30_strict(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy", "PodDisruptionBudget"} <= kinds
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, k8s.KUBERNETES_VERSION, strict=True)
        except SchemaNotFoundError as exc:  # an unknown kind or apiVersion is an error here
            errors.append(exc.message)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_the_strict_validation_rejects_what_kubernetes_1_30_rejects(rendered: dict[str, list[Doc]]) -> None:
    gateway = k8s.named(rendered["prod"], "Deployment", "talos-gateway")
    kubernetes_validate.validate(gateway, k8s.KUBERNETES_VERSION, strict=True)
    typo = copy.deepcopy(gateway)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, k8s.KUBERNETES_VERSION, strict=True)
    # The native preStop sleep exists from 1.30 on; the schemas are really versioned.
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(gateway, "1.28.0", strict=True)


def test_every_overlay_is_in_its_own_namespace_under_the_restricted_pod_security_standard(
    rendered: dict[str, list[Doc]],
) -> None:
    for overlay, docs in rendered.items():
        (namespace,) = k8s.of_kind(docs, "Namespace")
        name = namespace["metadata"]["name"]
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        others = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
        assert others == {name}, overlay


# -- containers versus the services' code --------------------------------------------------------
@pytest.mark.parametrize("overlay", overlay_params())
def test_containers_run_the_right_module_with_settings_ports_and_probes_the_service_has(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    seen = set()
    problems: list[str] = []
    for workload, container, service in k8s.talos_containers(docs):
        seen.add(service)
        problems += k8s.check_container(workload, container, service, docs)
    assert seen == set(k8s.SERVICES)
    assert not problems, "\n".join(problems)


def test_an_unknown_variable_a_renamed_setting_or_a_wrong_port_is_caught(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = copy.deepcopy(rendered["prod"])
    workload, container = k8s.service_container(docs, "billing")
    assert k8s.check_container(workload, container, "billing", docs) == []

    # A variable the service does not read.
    container["env"].append({"name": "TALOS_BILLING_DATABASE_URI", "value": "x"})
    assert any(
        "TALOS_BILLING_DATABASE_URI is not a setting" in p
        for p in k8s.check_container(workload, container, "billing", docs)
    )
    container["env"].pop()

    # The service renames a setting the manifests set (port -> listen_port).
    real = k8s.SERVICES["billing"].settings_class()
    hints = typing.get_type_hints(real)
    renamed = dataclasses.make_dataclass(
        "Settings",
        [
            (
                "listen_port" if f.name == "port" else f.name,
                hints[f.name],
                dataclasses.field(default=f.default),
            )
            for f in dataclasses.fields(real)
            if f.default is not dataclasses.MISSING
        ],
        frozen=True,
    )
    problems = k8s.check_container(workload, container, "billing", docs, settings_cls=renamed)
    assert any("TALOS_BILLING_PORT is not a setting" in p for p in problems)
    assert any("lost a port setting" in p for p in problems)

    # A probe on a port the service does not open, and the container port drifting from it.
    container["readinessProbe"]["grpc"]["port"] = 50099
    container["ports"][0]["containerPort"] = 50099
    problems = k8s.check_container(workload, container, "billing", docs)
    assert any("readinessProbe targets port 50099, which talos_billing does not open" in p for p in problems)
    assert any("container ports" in p for p in problems)

    # The wrong module.
    container["command"] = ["python", "-m", "talos_moderation"]
    assert any("command" in p for p in k8s.check_container(workload, container, "billing", docs))


def test_a_gateway_probe_on_the_http_port_or_a_loopback_listener_is_caught(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = copy.deepcopy(rendered["prod"])
    workload, container = k8s.service_container(docs, "gateway")
    container["livenessProbe"] = {"grpc": {"port": 8080}}
    problems = k8s.check_container(workload, container, "gateway", docs)
    assert any("serves no gRPC health" in p for p in problems), problems
    container["livenessProbe"] = {"httpGet": {"port": "grpc", "path": "/healthz"}}
    problems = k8s.check_container(workload, container, "gateway", docs)
    assert any("serves no plain HTTP" in p for p in problems), problems
    container["livenessProbe"] = {"httpGet": {"port": "http", "path": "/v1/options"}}
    problems = k8s.check_container(workload, container, "gateway", docs)
    assert any("not one of talos_gateway's health paths" in p for p in problems), problems
    container["livenessProbe"] = {"httpGet": {"port": "http", "path": "/healthz"}}
    assert k8s.check_container(workload, container, "gateway", docs) == []
    cm_name = container["envFrom"][0]["configMapRef"]["name"]
    k8s.named(docs, "ConfigMap", cm_name)["data"]["TALOS_GATEWAY_HOST"] = "127.0.0.1"
    problems = k8s.check_container(workload, container, "gateway", docs)
    assert any("listens on 127.0.0.1" in p for p in problems), problems


def test_services_reach_the_ports_their_pods_declare(rendered: dict[str, list[Doc]]) -> None:
    for overlay, docs in rendered.items():
        for service in k8s.of_kind(docs, "Service"):
            name = service["metadata"]["name"]
            pods = [
                w for w in k8s.workloads(docs) if k8s.selects(service["spec"]["selector"], k8s.pod_labels(w))
            ]
            assert pods, f"{overlay}: Service {name} selects no pod"
            for port in service["spec"]["ports"]:
                for pod in pods:
                    assert any(k8s.resolve_port(c, port["targetPort"]) for c in k8s.containers(pod)), (
                        f"{overlay}: Service {name} port {port['name']} -> {port['targetPort']}: not declared"
                    )


def _service_for(docs: list[Doc], address: str) -> tuple[Doc, int]:
    host, _, port = address.rpartition(":")
    return k8s.named(docs, "Service", host.split(".")[0]), int(port)


@pytest.mark.parametrize("overlay", overlay_params())
def test_addresses_point_at_services_of_the_right_pods(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    gateway = k8s.service_settings(docs, "gateway")
    render = k8s.service_settings(docs, "render")
    billing = k8s.service_settings(docs, "billing")
    moderation = k8s.service_settings(docs, "moderation")
    gateway_pod = k8s.pod_labels(k8s.named(docs, "Deployment", "talos-gateway"))

    # Render nodes dial a headless Service, so the name resolves to every gateway replica.
    (relay_address,) = render.relay.split(",")
    relay, port = _service_for(docs, relay_address)
    assert relay["spec"].get("clusterIP") == "None"
    assert k8s.selects(relay["spec"]["selector"], gateway_pod)
    assert port == gateway.relay_port
    (relay_port,) = [p for p in relay["spec"]["ports"] if p["port"] == port]
    assert relay_port["targetPort"] in ("relay", gateway.relay_port)

    for address, target, target_port in (
        (gateway.billing_addr, "talos-billing", billing.port),
        (gateway.moderation_addr, "talos-moderation", moderation.port),
    ):
        service, port = _service_for(docs, address)
        assert k8s.selects(service["spec"]["selector"], k8s.pod_labels(k8s.named(docs, "Deployment", target)))
        (svc_port,) = [p for p in service["spec"]["ports"] if p["port"] == port]
        assert svc_port["targetPort"] in ("grpc", target_port)


# -- hardening, sizing, shutdown --------------------------------------------------------------
@pytest.mark.parametrize("overlay", overlay_params())
def test_every_pod_is_hardened_and_sized(rendered: dict[str, list[Doc]], overlay: str) -> None:
    problems = []
    for workload in k8s.workloads(rendered[overlay]):
        name = workload["metadata"]["name"]
        spec = k8s.pod_spec(workload)
        pod_sc = spec.get("securityContext", {})
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: service-account token mounted")
        if pod_sc.get("runAsNonRoot") is not True or pod_sc.get("runAsUser", 0) == 0:
            problems.append(f"{name}: pod may run as root")
        if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: no RuntimeDefault seccomp profile")
        for container in k8s.containers(workload):
            sc = container.get("securityContext", {})
            where = f"{name}:{container['name']}"
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: privilege escalation allowed")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem writable")
            if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
                problems.append(f"{where}: capabilities not all dropped")
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            if Path("/tmp") not in k8s.writable_mounts(workload, container):
                problems.append(f"{where}: no writable /tmp")
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(resources.get(kind, {})):
                    problems.append(f"{where}: no cpu and memory {kind}")
            image = container["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if "@sha256:" not in image and (not tag or tag == "latest"):
                problems.append(f"{where}: image {image} is not pinned to a tag")
        for volume in spec.get("volumes", []):
            if "hostPath" in volume:
                problems.append(f"{name}: hostPath volume {volume['name']}")
        if workload["kind"] == "Deployment":
            rolling = workload["spec"].get("strategy", {}).get("rollingUpdate", {})
            if rolling.get("maxUnavailable") != 0:
                problems.append(f"{name}: maxUnavailable is not 0")
    assert not problems, "\n".join(problems)


def _grace(workload: Doc) -> int:
    return int(k8s.pod_spec(workload)["terminationGracePeriodSeconds"])


def _pre_stop_seconds(container: Doc) -> int:
    sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep")
    return int(sleep["seconds"]) if sleep else 0


@pytest.mark.parametrize("overlay", overlay_params())
def test_termination_grace_outlasts_the_longest_render_and_every_drain(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    from talos.api.v1 import contract

    docs = rendered[overlay]
    gateway = k8s.service_settings(docs, "gateway")
    render = k8s.service_settings(docs, "render")
    # The relay's time limit for the longest job it can be given: the most steps the API allows
    # (and the node accepts) at the largest size the API offers.
    steps = min(int(contract.STEPS.maximum or 0), render.max_steps)
    megapixels = contract.MAX_PIXELS / 1e6
    longest = (
        gateway.job_timeout_base_seconds + gateway.job_timeout_per_step_megapixel_seconds * steps * megapixels
    )

    render_workload, render_container = k8s.service_container(docs, "render")
    assert render.shutdown_grace_seconds >= longest
    assert _grace(render_workload) > render.shutdown_grace_seconds + _pre_stop_seconds(render_container)

    gateway_workload, gateway_container = k8s.service_container(docs, "gateway")
    assert _pre_stop_seconds(gateway_container) >= 5, "endpoints need time to drop a draining gateway"
    assert gateway.drain_grace_seconds >= longest, (
        "a job on a node when draining starts must be able to finish"
    )
    # The gateway drains in two steps: renders finish (drain grace), then what is left is failed
    # and refunded (up to two downstream timeouts); the kubelet must not kill it before.
    gateway_shutdown = (
        _pre_stop_seconds(gateway_container)
        + gateway.drain_grace_seconds
        + 2 * gateway.downstream_timeout_seconds
    )
    assert _grace(gateway_workload) >= gateway_shutdown + 10

    for service in ("billing", "moderation"):
        workload, container = k8s.service_container(docs, service)
        settings = k8s.service_settings(docs, service)
        assert _grace(workload) > settings.drain_grace_seconds + _pre_stop_seconds(container), service

    # The startup probe leaves room for loading and warming up the model (10 minutes at least).
    probe = render_container["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 600


def test_dev_runs_one_of_each_with_the_builtin_model_on_a_cpu_and_its_own_postgresql(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["dev"]
    assert not k8s.of_kind(docs, "HorizontalPodAutoscaler")
    for workload in k8s.workloads(docs):
        assert workload["spec"].get("replicas", 1) == 1, workload["metadata"]["name"]
    render = k8s.service_settings(docs, "render")
    assert render.model == "builtin" and render.device == "cpu"
    _, container = k8s.service_container(docs, "render")
    assert not any("nvidia.com/gpu" in container["resources"].get(k, {}) for k in ("requests", "limits"))
    assert "nodeSelector" not in k8s.pod_spec(k8s.service_container(docs, "render")[0])

    billing = k8s.service_settings(docs, "billing")
    url = billing.database_url
    assert url.startswith("postgresql+asyncpg://") and not secrets.URL_WITH_PASSWORD.search(url)
    service, port = _service_for(docs, url.split("@", 1)[1].split("/", 1)[0])
    postgres = k8s.named(docs, "StatefulSet", service["metadata"]["name"])
    assert k8s.selects(service["spec"]["selector"], k8s.pod_labels(postgres)) and port == 5432
    for workload, _, _ in k8s.talos_containers(docs):
        assert workload["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":dev")


def test_prod_runs_replicas_gpu_render_nodes_and_postgresql_from_a_secret(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["prod"]
    (hpa,) = k8s.of_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "talos-gateway" and hpa["spec"]["minReplicas"] >= 2
    gateway = k8s.named(docs, "Deployment", "talos-gateway")
    assert "replicas" not in gateway["spec"], "the autoscaler owns the gateway's replica count"
    for name in ("talos-billing", "talos-moderation", "talos-render"):
        assert k8s.named(docs, "Deployment", name)["spec"]["replicas"] >= 2, name
    pdbs = {p["metadata"]["name"]: p for p in k8s.of_kind(docs, "PodDisruptionBudget")}
    for name in ("talos-gateway", "talos-billing", "talos-moderation", "talos-render"):
        target = k8s.pod_labels(k8s.named(docs, "Deployment", name))
        assert k8s.label_selector_matches(pdbs[name]["spec"]["selector"], target), name

    workload, container = k8s.service_container(docs, "render")
    spec = k8s.pod_spec(workload)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert spec["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in spec["tolerations"])
    render = k8s.service_settings(docs, "render")
    assert render.device.startswith("cuda")
    (model_mount,) = [
        m for m in container["volumeMounts"] if Path(render.model).is_relative_to(m["mountPath"])
    ]
    assert model_mount["readOnly"] is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == model_mount["name"]]
    claim = volume["persistentVolumeClaim"]
    assert claim["readOnly"] is True
    pvc = k8s.named(docs, "PersistentVolumeClaim", claim["claimName"])
    assert "ReadOnlyMany" in pvc["spec"]["accessModes"]

    for service, secret_var in (("billing", "TALOS_BILLING_DATABASE_URL"), ("render", "TALOS_RENDER_TOKEN")):
        _, container = k8s.service_container(docs, service)
        (item,) = [e for e in container["env"] if e["name"] == secret_var]
        assert item["valueFrom"]["secretKeyRef"]["name"]
    assert not k8s.of_kind(docs, "StatefulSet"), "prod's PostgreSQL is outside the cluster"
    for _, container, _ in k8s.talos_containers(docs):
        assert "/" in container["image"].split(":")[0], "prod pulls from a registry"


# -- network policies ----------------------------------------------------------------------------
def _pods(docs: list[Doc]) -> dict[str, Endpoint]:
    return {
        w["metadata"]["name"].removeprefix("talos-"): Endpoint(k8s.pod_labels(w)) for w in k8s.workloads(docs)
    }


KUBE_DNS = Endpoint({"k8s-app": "kube-dns"}, {"kubernetes.io/metadata.name": "kube-system"})
INTERNET = Endpoint(None)
MONITORING = Endpoint({"app": "prometheus"}, {"kubernetes.io/metadata.name": "monitoring"})
ELSEWHERE = Endpoint({"app": "anything"}, {"kubernetes.io/metadata.name": "other"})


@pytest.mark.parametrize("overlay", overlay_params())
def test_network_policies_let_only_the_paths_talos_uses(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    pods = _pods(docs)
    gateway, billing, moderation, render = (pods[n] for n in ("gateway", "billing", "moderation", "render"))

    def can(src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
        return netpol.allowed(docs, src, dst, port, protocol)

    # A default deny for everything in the namespace.
    assert any(
        p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in k8s.of_kind(docs, "NetworkPolicy")
    )
    # Only the gateway reaches billing and moderation.
    assert can(gateway, billing, 50061) and can(gateway, moderation, 50062)
    for other in (render, moderation, INTERNET, ELSEWHERE):
        assert not can(other, billing, 50061)
    for other in (render, billing, INTERNET, ELSEWHERE):
        assert not can(other, moderation, 50062)
    # Render nodes reach the relay port and DNS, nothing else.
    assert can(render, gateway, 50052)
    assert can(render, KUBE_DNS, 53, "UDP") and can(render, KUBE_DNS, 53, "TCP")
    for port in (8080, 50051):
        assert not can(render, gateway, port)
    assert not can(render, INTERNET, 443) and not can(render, ELSEWHERE, 50052)
    # Clients and outside contributors reach the gateway's public ports.
    for port in (8080, 50051, 50052):
        assert can(INTERNET, gateway, port)
    assert not can(INTERNET, render, 9471) and can(MONITORING, render, 9471)
    # Billing reaches its PostgreSQL; moderation reaches nothing but DNS.
    assert can(billing, INTERNET, 5432) and not can(billing, INTERNET, 443)
    assert not can(moderation, INTERNET, 443) and not can(moderation, gateway, 50052)
    if "postgres" in pods:
        assert can(billing, pods["postgres"], 5432)
        assert not can(gateway, pods["postgres"], 5432) and not can(render, pods["postgres"], 5432)


def test_the_policy_evaluator_sees_an_opened_path(rendered: dict[str, list[Doc]]) -> None:
    docs = copy.deepcopy(rendered["prod"])
    pods = _pods(docs)
    assert not netpol.allowed(docs, pods["render"], pods["billing"], 50061)
    policy = k8s.named(docs, "NetworkPolicy", "talos-billing")
    policy["spec"]["ingress"][0]["from"].append({"podSelector": {}})
    render_policy = k8s.named(docs, "NetworkPolicy", "talos-render")
    render_policy["spec"]["egress"].append({"ports": [{"protocol": "TCP", "port": 50061}]})
    assert netpol.allowed(docs, pods["render"], pods["billing"], 50061)


# -- secrets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", overlay_params())
def test_no_manifest_holds_a_secret_value(rendered: dict[str, list[Doc]], overlay: str) -> None:
    problems = secrets.secret_problems(rendered[overlay])
    assert not problems, "\n".join(problems)


def test_no_secret_in_the_deploy_files_themselves() -> None:
    problems = []
    for path in sorted(k8s.K8S.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text()
        where = path.relative_to(k8s.REPO)
        if re.search(r"^kind:\s*Secret\s*$", text, re.M):
            problems.append(f"{where}: a Secret object")
        if "secretGenerator" in text:
            problems.append(f"{where}: a secretGenerator (its values would be committed)")
        for number, line in enumerate(text.splitlines(), 1):
            reason = secrets.secret_like(line)
            if reason:
                problems.append(f"{where}:{number}: {reason}")
    assert not problems, "\n".join(problems)


def test_the_secret_checks_catch_committed_values(rendered: dict[str, list[Doc]]) -> None:
    from talos_billing import keys

    docs = copy.deepcopy(rendered["prod"])
    assert secrets.secret_problems(docs) == []
    _, container = k8s.service_container(docs, "render")
    (token,) = [e for e in container["env"] if e["name"] == "TALOS_RENDER_TOKEN"]
    token.pop("valueFrom")
    token["value"] = keys.new_node_token()
    _, billing = k8s.service_container(docs, "billing")
    (url,) = [e for e in billing["env"] if e["name"] == "TALOS_BILLING_DATABASE_URL"]
    url.pop("valueFrom")
    url["value"] = "postgresql+asyncpg://talos:hunter2@db:5432/talos"
    docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "stringData": {"a": "b"}})
    problems = secrets.secret_problems(docs)
    assert any("Deployment/talos-render: env TALOS_RENDER_TOKEN holds a value" in p for p in problems)
    assert any(p.startswith("Deployment/talos-render.spec") and "matches" in p for p in problems)
    assert any(p.startswith("Deployment/talos-billing.spec") and "://" in p for p in problems)
    assert any("a Secret is committed" in p for p in problems)
    assert "hunter2" not in "\n".join(problems), "a report must not repeat the secret"
    assert secrets.secret_like(keys.new_api_key()) and secrets.secret_like("postgresql://u:p@h/d")
    assert secrets.secret_like("talos-gateway-config-5d272fdd75") is None


def service_link_variables(service: Doc) -> set[str]:
    """The variables the kubelet injects for a Service when service links are on."""
    base = service["metadata"]["name"].upper().replace("-", "_")
    names = {f"{base}_SERVICE_HOST", f"{base}_SERVICE_PORT", f"{base}_PORT"}
    for port in service["spec"]["ports"]:
        proto = port.get("protocol", "TCP")
        names.add(f"{base}_PORT_{port['port']}_{proto}")
        names |= {f"{base}_PORT_{port['port']}_{proto}_{x}" for x in ("PROTO", "PORT", "ADDR")}
        if port.get("name"):
            names.add(f"{base}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}")
    return names


@pytest.mark.parametrize("overlay", overlay_params())
def test_service_links_are_off_because_they_would_overwrite_settings(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    injected = set().union(*(service_link_variables(s) for s in k8s.of_kind(docs, "Service")))
    settings = {
        name
        for spec in k8s.SERVICES.values()
        for name in talos_settings.variables(spec.settings_class(), spec.prefix())
    }
    # Service talos-billing would set TALOS_BILLING_PORT=tcp://10.x.y.z:50061 in every pod.
    assert "TALOS_BILLING_PORT" in injected & settings
    for workload in k8s.workloads(docs):
        assert k8s.pod_spec(workload).get("enableServiceLinks") is False, workload["metadata"]["name"]
