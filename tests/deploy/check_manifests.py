#!/usr/bin/env python3
"""Static checks of moeserve's deployment files (no Docker engine or cluster needed).

Parses every YAML under deploy/ (multi-document), the compose file, the two Dockerfiles and
checks that the fields which must agree do agree: ports (gRPC 50051, metrics 9400), probes,
image names, grace periods, resources, monitoring wiring, and that the container configs pass
`moeserve --check_config`.

  check_manifests.py --repo ROOT [--moeserve build/server/moeserve] [--selftest]

--selftest first checks the real files, then applies known-bad mutations in memory (wrong
port, missing probe, ...) and asserts that each one is reported, so every check can fail.
Exit status: 0 all good, 1 a check failed, 2 usage error.
"""
import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

GRPC_PORT = 50051
METRICS_PORT = 9400
HTTP_PORT = 8000  # the OpenAI-compatible API (http.listen)
CONFIG_IN_IMAGE = "/etc/moeserve/config.yaml"
DOCKERFILES = {"Dockerfile": "gpu", "deploy/jetson/Dockerfile": "jetson"}
CONTAINER_CONFIG = "deploy/config/container.yaml"
COMPOSE = "deploy/compose.yaml"
K8S = "deploy/k8s/"


# ---- loading -------------------------------------------------------------------------------

def parse_dockerfile(text):
    """Instructions per stage: {"args": {...}, "stages": [{"image", "name", "platform", "instrs"}]}.

    Continuation lines are joined and comments dropped, as Docker does; ${ARG} in FROM is
    replaced by the default of an ARG declared before the first FROM.
    """
    lines, cur = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if s.startswith("#") or (not s and not cur):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        lines.append(cur + s)
        cur = ""
    if cur:
        lines.append(cur)
    args, stages = {}, []
    for line in lines:
        instr, _, rest = line.partition(" ")
        instr, rest = instr.upper(), rest.strip()
        if instr == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default.strip('"')
        elif instr == "FROM":
            toks = rest.split()
            platform = next((t.split("=", 1)[1] for t in toks if t.startswith("--platform=")), None)
            toks = [t for t in toks if not t.startswith("--")]
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda mo: args.get(mo.group(1) or mo.group(2), ""), toks[0])
            name = toks[2] if len(toks) >= 3 and toks[1].lower() == "as" else None
            stages.append({"image": image, "name": name, "platform": platform, "instrs": []})
        elif stages:
            stages[-1]["instrs"].append((instr, rest))
    return {"args": args, "stages": stages}


def load(repo):
    """Everything the checks read, as plain data (so the self-test can mutate it)."""
    m = {"repo": repo, "load_errors": [], "yaml": {}, "text": {}, "dockerfiles": {}}
    for root, _, files in os.walk(os.path.join(repo, "deploy")):
        for f in sorted(files):
            rel = os.path.relpath(os.path.join(root, f), repo)
            if f.endswith((".yaml", ".yml")):
                try:
                    with open(os.path.join(repo, rel)) as fh:
                        m["yaml"][rel] = [d for d in yaml.safe_load_all(fh) if d is not None]
                except yaml.YAMLError as e:
                    m["load_errors"].append(f"{rel}: not valid YAML: {e}")
            elif f.endswith(".json"):
                try:
                    with open(os.path.join(repo, rel)) as fh:
                        json.load(fh)
                except ValueError as e:
                    m["load_errors"].append(f"{rel}: not valid JSON: {e}")
    for rel in list(DOCKERFILES) + [CONTAINER_CONFIG, K8S + "README.md", ".dockerignore"]:
        path = os.path.join(repo, rel)
        if not os.path.exists(path):
            m["load_errors"].append(f"{rel}: missing")
            continue
        with open(path) as fh:
            m["text"][rel] = fh.read()
    for rel in DOCKERFILES:
        if rel in m["text"]:
            m["dockerfiles"][rel] = parse_dockerfile(m["text"][rel])
    return m


# ---- helpers -------------------------------------------------------------------------------

def dig(obj, *keys, default=None):
    for k in keys:
        if isinstance(obj, dict) and k in obj:
            obj = obj[k]
        elif isinstance(obj, list) and isinstance(k, int) and -len(obj) <= k < len(obj):
            obj = obj[k]
        else:
            return default
    return obj


def port_of(address):
    """"0.0.0.0:9400" -> ("0.0.0.0", 9400); None when malformed."""
    host, sep, port = str(address).rpartition(":")
    return (host, int(port)) if sep and port.isdigit() else None


def k8s_objects(m, kind):
    return [d for rel, docs in m["yaml"].items() if rel.startswith(K8S) for d in docs
            if isinstance(d, dict) and d.get("kind") == kind]


def the_one(m, kind, errors):
    objs = k8s_objects(m, kind)
    if len(objs) != 1:
        errors.append(f"{K8S}: expected exactly one {kind}, found {len(objs)}")
        return None
    return objs[0]


def deployment_container(m, errors):
    dep = the_one(m, "Deployment", errors)
    containers = dig(dep, "spec", "template", "spec", "containers", default=[]) or []
    c = next((c for c in containers if c.get("name") == "moeserve"), None)
    if dep is not None and c is None:
        errors.append("Deployment: no container named moeserve")
    return dep, c


def configmap_config(m, errors):
    """(ConfigMap, parsed config.yaml in it, its text)."""
    cm = the_one(m, "ConfigMap", errors)
    text = dig(cm, "data", "config.yaml")
    if cm is not None and text is None:
        errors.append("ConfigMap: no data key config.yaml (the file moeserve reads)")
    try:
        return cm, (yaml.safe_load(text) if text else None), text
    except yaml.YAMLError as e:
        errors.append(f"ConfigMap config.yaml: not valid YAML: {e}")
        return cm, None, text


def grace_period(config):
    return float(dig(config, "server", "grace_period_s", default=30))  # server_config.h default


def seconds(duration):
    """Compose durations ("40s", "1m30s") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", str(duration))
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3}
    return sum(float(n) * scale[u] for n, u in parts) if parts else None


def compose_ports(service):
    """[(published, container)] from short ("H:C", "IP:H:C/tcp") or long syntax."""
    out = []
    for p in service.get("ports", []) or []:
        if isinstance(p, dict):
            out.append((int(p.get("published", 0) or 0), int(p.get("target", 0))))
        else:
            parts = str(p).split("/")[0].split(":")
            out.append((int(parts[-2]) if len(parts) > 1 else 0, int(parts[-1])))
    return out


def compose_mounts(service, compose_dir):
    """[(source resolved to a repo-relative path or a volume name, target)]."""
    out = []
    for v in service.get("volumes", []) or []:
        if isinstance(v, dict):
            src, dst = v.get("source", ""), v.get("target", "")
        else:
            src, _, rest = str(v).partition(":")
            dst = rest.split(":")[0]
        src = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(src))  # ${VAR:-default} -> default
        if src.startswith((".", "/")):
            src = os.path.normpath(os.path.join(compose_dir, src))
        out.append((src, dst))
    return out


# ---- checks (each returns a list of error strings) -----------------------------------------

def check_loaded(m):
    return list(m["load_errors"])


def check_dockerfiles(m):
    errors = []
    # A host build tree in the context would carry a CMakeCache.txt of another path into /src.
    ignored = {ln.strip().strip("/") for ln in m["text"].get(".dockerignore", "").splitlines()}
    for must in ("build", ".git"):
        if must not in ignored:
            errors.append(f".dockerignore: must exclude {must}")
    for rel, flavour in DOCKERFILES.items():
        df = m["dockerfiles"].get(rel)
        if df is None:
            continue
        stages = df["stages"]
        if len(stages) < 2:
            errors.append(f"{rel}: expected a multi-stage build, found {len(stages)} stage(s)")
            continue
        final = stages[-1]["instrs"]
        instrs = lambda st, name: [a for i, a in st if i == name]  # noqa: E731
        users = instrs(final, "USER")
        if not users or users[-1].split(":")[0] in ("root", "0"):
            errors.append(f"{rel}: final stage must switch to a non-root USER (got {users[-1] if users else 'none'})")
        exposed = {int(p.split("/")[0]) for a in instrs(final, "EXPOSE") for p in a.split()}
        if exposed != {GRPC_PORT, METRICS_PORT, HTTP_PORT}:
            errors.append(f"{rel}: EXPOSE {sorted(exposed)}, expected [{HTTP_PORT}, {GRPC_PORT}, {METRICS_PORT}]")
        hc = instrs(final, "HEALTHCHECK")
        hc_words = re.sub(r'[\[\]",]', " ", hc[-1]).split() if hc else []
        if not hc or "moectl" not in hc_words or "health" not in hc_words or \
                f"localhost:{GRPC_PORT}" not in hc_words:
            errors.append(f"{rel}: HEALTHCHECK must run `moectl health --target localhost:{GRPC_PORT}`")
        # CI's install path: setup.sh then build.sh, in the same build stage.
        runs = lambda st: instrs(st["instrs"], "RUN")  # noqa: E731
        build_stage = next((s for s in stages[:-1] if any("scripts/build.sh" in a for a in runs(s))), None)
        if build_stage is None:
            errors.append(f"{rel}: no build stage RUNs scripts/build.sh (the script CI runs)")
        elif not any("scripts/setup.sh" in a for a in runs(build_stage)):
            errors.append(f"{rel}: the build stage does not RUN scripts/setup.sh (the script CI runs)")
        if not any(CONTAINER_CONFIG in a and a.split()[-1] == CONFIG_IN_IMAGE for a in instrs(final, "COPY")):
            errors.append(f"{rel}: final stage must COPY {CONTAINER_CONFIG} to {CONFIG_IN_IMAGE}")
        if not any(CONFIG_IN_IMAGE in a for a in instrs(final, "ENTRYPOINT")):
            errors.append(f"{rel}: ENTRYPOINT must start moeserve with --config {CONFIG_IN_IMAGE}")
        # Both images serve on the GPU: built with the CUDA backend (explicitly, so a missing
        # toolkit fails the build) and carrying the CUDA runtime and cuBLAS it links.
        if build_stage and not any("-DMOESERVE_CUDA=ON" in a for a in runs(build_stage)):
            errors.append(f"{rel}: build.sh must get -DMOESERVE_CUDA=ON (the image serves on the GPU)")
        copies = " ".join(instrs(final, "COPY"))
        for lib in ("libcudart.so", "libcublas.so", "libcublasLt.so"):
            if lib not in copies:
                errors.append(f"{rel}: final stage must COPY the CUDA library {lib}* the backend links")
        images = [s["image"] for s in stages]
        if flavour == "gpu":
            for kind in ("devel", "runtime"):
                if not any(re.match(rf"nvidia/cuda:[\d.]+-{kind}-", i) for i in images):
                    errors.append(f"{rel}: no stage FROM an nvidia/cuda *-{kind} image (got {images})")
        else:
            if not any(i.startswith("nvcr.io/nvidia/l4t-jetpack:r36") for i in images):
                errors.append(f"{rel}: no stage FROM nvcr.io/nvidia/l4t-jetpack:r36.x (got {images})")
            if build_stage and not any("-DCMAKE_CUDA_ARCHITECTURES=87" in a for a in runs(build_stage)):
                errors.append(f"{rel}: build.sh must get -DCMAKE_CUDA_ARCHITECTURES=87 (Orin is sm_87)")
            if any(s["platform"] != "linux/arm64" for s in stages):
                errors.append(f"{rel}: every stage must be FROM --platform=linux/arm64")
    return errors


def check_server_config(label, config, errors):
    """Listen addresses every container config must have."""
    listen = port_of(dig(config, "server", "listen", default=""))
    if listen is None or listen[1] != GRPC_PORT or listen[0] not in ("0.0.0.0", "[::]"):
        errors.append(f"{label}: server.listen must be 0.0.0.0:{GRPC_PORT} (got {dig(config, 'server', 'listen')})")
    if dig(config, "http", "listen") != f"0.0.0.0:{HTTP_PORT}":
        errors.append(f"{label}: http.listen must be 0.0.0.0:{HTTP_PORT} in a container "
                      f"(got {dig(config, 'http', 'listen')})")
    if dig(config, "metrics", "listen") != f"0.0.0.0:{METRICS_PORT}":
        errors.append(f"{label}: metrics.listen must be 0.0.0.0:{METRICS_PORT} in a container "
                      f"(got {dig(config, 'metrics', 'listen')})")
    if dig(config, "model", "path") != "/models":
        errors.append(f"{label}: model.path must be /models, where the model volume is mounted")


def check_container_config(m):
    errors = []
    text = m["text"].get(CONTAINER_CONFIG)
    if text is not None:
        config = yaml.safe_load(text)
        check_server_config(CONTAINER_CONFIG, config, errors)
        if dig(config, "model", "backend", default="auto") not in ("auto", "cuda"):
            errors.append(f"{CONTAINER_CONFIG}: model.backend must be auto (or cuda) so the images serve on the GPU "
                          f"(got {dig(config, 'model', 'backend')})")
    return errors


def check_compose(m):
    errors = []
    compose = dig(m["yaml"], COMPOSE, 0)
    if compose is None:
        return [f"{COMPOSE}: missing or empty"]
    services = compose.get("services", {}) or {}
    for name in ("moeserve", "prometheus", "grafana"):
        if name not in services:
            errors.append(f"{COMPOSE}: no service {name}")
    if errors:
        return errors
    cdir = os.path.dirname(COMPOSE)
    srv = services["moeserve"]
    ports = compose_ports(srv)
    for want in (GRPC_PORT, METRICS_PORT, HTTP_PORT):
        if (want, want) not in ports:
            errors.append(f"{COMPOSE}: moeserve must publish {want}:{want} (got {ports})")
    build = srv.get("build") or {}
    context = os.path.normpath(os.path.join(cdir, build.get("context", ".")))
    if context != "." or build.get("dockerfile") != "Dockerfile":
        errors.append(f"{COMPOSE}: moeserve must build the repository root's Dockerfile (got {build})")
    mounts = compose_mounts(srv, cdir)
    if not any(dst == "/models" for _, dst in mounts):
        errors.append(f"{COMPOSE}: moeserve has no model volume at /models")
    for src, dst in mounts:
        if dst == CONFIG_IN_IMAGE and src != CONTAINER_CONFIG:
            errors.append(f"{COMPOSE}: {CONFIG_IN_IMAGE} must come from {CONTAINER_CONFIG} (got {src})")
    grace = grace_period(yaml.safe_load(m["text"].get(CONTAINER_CONFIG, "") or "{}"))
    stop = seconds(srv.get("stop_grace_period", "10s"))  # Docker's default is 10 s
    if stop is None or stop <= grace:
        errors.append(f"{COMPOSE}: moeserve stop_grace_period ({srv.get('stop_grace_period', '10s')}) must exceed "
                      f"server.grace_period_s ({grace:g}) or drains end in SIGKILL")
    _, container = deployment_container(m, [])
    if container is not None and srv.get("image") != container.get("image"):
        errors.append(f"{COMPOSE}: image {srv.get('image')} differs from the Deployment's {container.get('image')}")
    # Prometheus reads a scrape config that targets the compose service by name.
    prom = services["prometheus"]
    config_path = next((c.split("=", 1)[1] for c in prom.get("command", []) or [] if c.startswith("--config.file=")),
                       "/etc/prometheus/prometheus.yml")
    src = next((s for s, d in compose_mounts(prom, cdir) if d == config_path), None)
    scrape = dig(m["yaml"], src, 0) if src else None
    if scrape is None:
        errors.append(f"{COMPOSE}: prometheus mounts no config from deploy/ at {config_path}")
    else:
        targets = [t for job in scrape.get("scrape_configs", []) or [] for sc in job.get("static_configs", []) or []
                   for t in sc.get("targets", []) or []]
        if f"moeserve:{METRICS_PORT}" not in targets:
            errors.append(f"{src}: compose Prometheus must scrape moeserve:{METRICS_PORT} (got {targets})")
    # Grafana: provisioning at its default folder, dashboards where the provider says.
    graf = services["grafana"]
    gmounts = dict((d, s) for s, d in compose_mounts(graf, cdir))
    prov_dir = (graf.get("environment") or {}).get("GF_PATHS_PROVISIONING", "/etc/grafana/provisioning")
    if gmounts.get(prov_dir) != "deploy/grafana/provisioning":
        errors.append(f"{COMPOSE}: grafana must mount deploy/grafana/provisioning at {prov_dir}")
    providers = [p for rel, docs in m["yaml"].items() if rel.startswith("deploy/grafana/provisioning/dashboards/")
                 for d in docs for p in d.get("providers", []) or []]
    if not providers:
        errors.append("deploy/grafana/provisioning/dashboards: no dashboard provider")
    for p in providers:
        path = dig(p, "options", "path")
        if gmounts.get(path) != "deploy/grafana/dashboards":
            errors.append(f"{COMPOSE}: grafana must mount deploy/grafana/dashboards at {path} (the provider's path)")
    for rel, docs in m["yaml"].items():
        if rel.startswith("deploy/grafana/provisioning/datasources/"):
            for ds in (ds for d in docs for ds in d.get("datasources", []) or []):
                mo = re.match(r"https?://([^:/]+):(\d+)", str(ds.get("url", "")))
                if not mo or mo.group(1) not in services or int(mo.group(2)) != 9090:
                    errors.append(f"{rel}: data source url {ds.get('url')} is not a compose service on 9090")
    return errors


def check_k8s(m):
    errors = []
    dep, c = deployment_container(m, errors)
    cm, config, _ = configmap_config(m, errors)
    if dep is None or c is None:
        return errors
    pod = dep["spec"]["template"]
    labels = dig(pod, "metadata", "labels", default={}) or {}
    named = {p.get("name"): p.get("containerPort") for p in c.get("ports", []) or []}
    if named.get("grpc") != GRPC_PORT or named.get("metrics") != METRICS_PORT or named.get("http") != HTTP_PORT:
        errors.append(f"Deployment: container ports must be grpc={GRPC_PORT}, metrics={METRICS_PORT}, "
                      f"http={HTTP_PORT} (got {named})")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        port = dig(c, probe, "grpc", "port")
        if port != GRPC_PORT:
            errors.append(f"Deployment: {probe} must be a grpc probe on port {GRPC_PORT} (got {c.get(probe)})")
    pre = dig(c, "lifecycle", "preStop")
    cmd = dig(pre, "exec", "command", default=[]) or []
    pre_s = dig(pre, "sleep", "seconds")
    if pre_s is None and len(cmd) == 2 and cmd[0] == "sleep" and str(cmd[1]).isdigit():
        pre_s = int(cmd[1])
    if pre is None:
        errors.append("Deployment: no lifecycle.preStop hook (endpoints must be removed before the drain)")
    if config is not None:
        check_server_config("ConfigMap config.yaml", config, errors)
        grace = grace_period(config)
        tgps = dig(pod, "spec", "terminationGracePeriodSeconds", default=30)
        if tgps <= grace + (pre_s or 0):
            errors.append(f"Deployment: terminationGracePeriodSeconds {tgps} must exceed preStop {pre_s or 0} s + "
                          f"server.grace_period_s {grace:g}")
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if dig(res, part, r) is None:
                errors.append(f"Deployment: resources.{part}.{r} not set")
    cpu = str(dig(res, "limits", "cpu", default=""))
    threads = dig(config, "model", "threads")
    if cpu.isdigit() and threads != int(cpu):
        errors.append(f"ConfigMap: model.threads ({threads}) must equal resources.limits.cpu ({cpu})")
    mounts = {v.get("mountPath"): v.get("name") for v in c.get("volumeMounts", []) or []}
    vols = {v.get("name"): v for v in dig(pod, "spec", "volumes", default=[]) or []}
    cfg_vol = vols.get(mounts.get(os.path.dirname(CONFIG_IN_IMAGE)), {})
    if cm is not None and dig(cfg_vol, "configMap", "name") != cm["metadata"]["name"]:
        errors.append(f"Deployment: ConfigMap {cm['metadata']['name']} must be mounted at "
                      f"{os.path.dirname(CONFIG_IN_IMAGE)}")
    if "/models" not in mounts:
        errors.append("Deployment: no model volume mounted at /models")
    # Headless Service for client-side balancing.
    svcs = k8s_objects(m, "Service")
    svc = next((s for s in svcs if s["metadata"]["name"] == "moeserve-headless"), None)
    if svc is None:
        errors.append("Service: no Service moeserve-headless")
    else:
        if dig(svc, "spec", "clusterIP") != "None":
            errors.append("Service moeserve-headless: clusterIP must be None (headless)")
        sel = dig(svc, "spec", "selector", default={}) or {}
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            errors.append(f"Service moeserve-headless: selector {sel} does not select the pods {labels}")
        grpc = next((p for p in dig(svc, "spec", "ports", default=[]) or [] if p.get("name") == "grpc"), None)
        target = grpc and grpc.get("targetPort", grpc.get("port"))
        if grpc is None or grpc.get("port") != GRPC_PORT or named.get(target, target) != GRPC_PORT:
            errors.append(f"Service moeserve-headless: port grpc must be {GRPC_PORT}, onto container port {GRPC_PORT}")
    ns = dep["metadata"].get("namespace", "default")
    readme = m["text"].get(K8S + "README.md", "")
    want = f"dns:///moeserve-headless.{ns}.svc.cluster.local:{GRPC_PORT}"
    if want not in readme:
        errors.append(f"{K8S}README.md: does not document the target {want}")
    pm = the_one(m, "PodMonitor", errors)
    if pm is not None:
        if pm.get("apiVersion") != "monitoring.coreos.com/v1":
            errors.append(f"PodMonitor: apiVersion must be monitoring.coreos.com/v1 (got {pm.get('apiVersion')})")
        sel = dig(pm, "spec", "selector", "matchLabels", default={}) or {}
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            errors.append(f"PodMonitor: selector {sel} does not select the pods {labels}")
        eps = dig(pm, "spec", "podMetricsEndpoints", default=[]) or []
        if not eps or any(named.get(e.get("port")) != METRICS_PORT for e in eps):
            errors.append(f"PodMonitor: every endpoint must use the name of container port {METRICS_PORT}")
    so = the_one(m, "ScaledObject", errors)
    if so is not None:
        ref = dig(so, "spec", "scaleTargetRef", default={}) or {}
        if ref.get("name") != dep["metadata"]["name"] or ref.get("kind", "Deployment") != "Deployment":
            errors.append(f"ScaledObject: scaleTargetRef {ref} must name the Deployment {dep['metadata']['name']}")
        trig = [t for t in dig(so, "spec", "triggers", default=[]) or [] if t.get("type") == "prometheus"]
        if not any("moeserve_num_requests_waiting" in str(dig(t, "metadata", "query")) for t in trig):
            errors.append("ScaledObject: no prometheus trigger whose query uses moeserve_num_requests_waiting")
    for kind in ("ConfigMap", "Service", "PodMonitor", "ScaledObject", "PersistentVolumeClaim"):
        for o in k8s_objects(m, kind):
            if o["metadata"].get("namespace", "default") != ns:
                errors.append(f"{kind} {o['metadata']['name']}: namespace differs from the Deployment's {ns}")
    kust = dig(m["yaml"], K8S + "kustomization.yaml", 0)
    files = {os.path.basename(r) for r in m["yaml"] if r.startswith(K8S) and not r.endswith("kustomization.yaml")}
    if kust is None or set(kust.get("resources", []) or []) != files:
        errors.append(f"{K8S}kustomization.yaml: resources must list exactly {sorted(files)}")
    return errors


_check_config_cache = {}


def check_config_passes(m, moeserve):
    """The container config and the ConfigMap's config are accepted by the real parser."""
    if not moeserve:
        return []
    errors = []
    _, _, cm_text = configmap_config(m, [])
    for label, text in ((CONTAINER_CONFIG, m["text"].get(CONTAINER_CONFIG)), ("ConfigMap config.yaml", cm_text)):
        if text is None:
            continue
        if text not in _check_config_cache:
            with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
                f.write(text)
                f.flush()
                r = subprocess.run([moeserve, "--config", f.name, "--check_config"], capture_output=True, text=True)
            _check_config_cache[text] = (r.returncode, (r.stderr or r.stdout).strip())
        rc, msg = _check_config_cache[text]
        if rc != 0:
            errors.append(f"{label}: moeserve --check_config refused it: {msg}")
    return errors


def run_checks(m, moeserve):
    checks = [check_loaded, check_dockerfiles, check_container_config, check_compose, check_k8s]
    errors = [e for c in checks for e in c(m)]
    return errors + check_config_passes(m, moeserve)


# ---- self-test: every check must be able to fail ---------------------------------------------

def _replace(m, rel, old, new, count=1):
    text = m["text"][rel]
    assert old in text, f"self-test mutation is stale: {old!r} not in {rel}"
    m["text"][rel] = text.replace(old, new, count)
    if rel in DOCKERFILES:
        m["dockerfiles"][rel] = parse_dockerfile(m["text"][rel])


def _doc(m, rel, kind=None):
    return next(d for d in m["yaml"][rel] if kind is None or d.get("kind") == kind)


def _container(m):
    return _doc(m, K8S + "deployment.yaml", "Deployment")["spec"]["template"]["spec"]["containers"][0]


def _svc(m, name):
    return m["yaml"][COMPOSE][0]["services"][name]


def _set_cm(m, old, new):
    cm = _doc(m, K8S + "configmap.yaml", "ConfigMap")
    assert old in cm["data"]["config.yaml"], f"self-test mutation is stale: {old!r}"
    cm["data"]["config.yaml"] = cm["data"]["config.yaml"].replace(old, new, 1)


GPU, JET, CC = "Dockerfile", "deploy/jetson/Dockerfile", CONTAINER_CONFIG
MUTATIONS = [  # (what, mutate(m), text the report must contain)
    ("build tree in context", lambda m: _replace(m, ".dockerignore", "\nbuild\n", "\n"), ".dockerignore"),
    ("EXPOSE wrong port", lambda m: _replace(m, GPU, "EXPOSE 50051 9400 8000", "EXPOSE 50052 9400 8000"), "EXPOSE"),
    ("no HTTP port", lambda m: _replace(m, JET, "EXPOSE 50051 9400 8000", "EXPOSE 50051 9400"), "EXPOSE"),
    ("HTTP API on loopback", lambda m: _replace(m, CC, '"0.0.0.0:8000"', '"127.0.0.1:8000"'), "http.listen"),
    ("USER root", lambda m: _replace(m, GPU, "USER 10001:10001", "USER root"), "non-root USER"),
    ("no HEALTHCHECK", lambda m: _replace(m, JET, "HEALTHCHECK", "LABEL x=y"), "HEALTHCHECK"),
    ("no setup.sh", lambda m: _replace(m, GPU, "RUN bash scripts/setup.sh", "RUN true"), "scripts/setup.sh"),
    ("no build.sh", lambda m: _replace(m, JET, "bash scripts/build.sh", "make"), "scripts/build.sh"),
    ("no CUDA devel stage", lambda m: _replace(m, GPU, "-devel-ubuntu", "-base-ubuntu"), "devel"),
    ("Jetson wrong base", lambda m: _replace(m, JET, "l4t-jetpack:r36.4.0", "l4t-jetpack:r35.4.1"), "l4t-jetpack"),
    ("Jetson no sm_87", lambda m: _replace(m, JET, "-DCMAKE_CUDA_ARCHITECTURES=87", ""), "=87"),
    ("CPU-only GPU image", lambda m: _replace(m, GPU, "-DMOESERVE_CUDA=ON", ""), "MOESERVE_CUDA"),
    ("Jetson without cuBLASLt", lambda m: _replace(m, JET, "libcublasLt.so.12*", "libfoo.so"), "libcublasLt"),
    ("container on the CPU", lambda m: _replace(m, CC, "backend: auto", "backend: cpu"), "model.backend"),
    ("config not in image", lambda m: _replace(m, GPU, CONFIG_IN_IMAGE + "\n", "/etc/x.yaml\n"), "COPY"),
    ("metrics on loopback", lambda m: _replace(m, CC, '"0.0.0.0:9400"', '"127.0.0.1:9400"'), "metrics.listen"),
    ("gRPC wrong port", lambda m: _replace(m, CC, '"0.0.0.0:50051"', '"0.0.0.0:50052"'), "server.listen"),
    ("config refused", lambda m: _replace(m, CC, "max_running: 64", "max_running: 0"), "check_config"),
    ("compose port", lambda m: _svc(m, "moeserve")["ports"].__setitem__(0, "50051:50052"),
     "publish 50051"),
    ("compose short stop", lambda m: _svc(m, "moeserve").__setitem__("stop_grace_period", "10s"),
     "stop_grace_period"),
    ("compose image", lambda m: _svc(m, "moeserve").__setitem__("image", "other:1"), "image"),
    ("compose no model", lambda m: _svc(m, "moeserve")["volumes"].pop(0), "/models"),
    ("prometheus on loopback", lambda m: m["yaml"]["deploy/prometheus/prometheus.yml"][0]["scrape_configs"][0]
     ["static_configs"][0].__setitem__("targets", ["127.0.0.1:9400"]), "moeserve:9400"),
    ("grafana dashboards path", lambda m: _svc(m, "grafana")["volumes"][1]
     .__setitem__("target", "/dashboards"), "deploy/grafana/dashboards"),
    ("grafana provisioning path", lambda m: _svc(m, "grafana")["volumes"][0]
     .__setitem__("target", "/provisioning"), "deploy/grafana/provisioning"),
    ("containerPort", lambda m: _container(m)["ports"][1].__setitem__("containerPort", 9401), "container ports"),
    ("no readinessProbe", lambda m: _container(m).pop("readinessProbe"), "readinessProbe"),
    ("http liveness", lambda m: _container(m).__setitem__("livenessProbe", {"httpGet": {"port": 9400}}), "livenessProbe"),
    ("startup wrong port", lambda m: _container(m)["startupProbe"]["grpc"].__setitem__("port", 50052), "startupProbe"),
    ("no preStop", lambda m: _container(m).pop("lifecycle"), "preStop"),
    ("short termination", lambda m: _doc(m, K8S + "deployment.yaml")["spec"]["template"]["spec"]
     .__setitem__("terminationGracePeriodSeconds", 30), "terminationGracePeriodSeconds"),
    ("longer drain", lambda m: _set_cm(m, "grace_period_s: 30", "grace_period_s: 40"), "terminationGracePeriodSeconds"),
    ("no limits", lambda m: _container(m)["resources"].pop("limits"), "resources.limits"),
    ("threads", lambda m: _set_cm(m, "threads: 8", "threads: 0"), "model.threads"),
    ("ConfigMap metrics", lambda m: _set_cm(m, '"0.0.0.0:9400"', '"127.0.0.1:9400"'), "ConfigMap config.yaml"),
    ("not headless", lambda m: _doc(m, K8S + "service.yaml")["spec"].pop("clusterIP"), "clusterIP"),
    ("Service port", lambda m: _doc(m, K8S + "service.yaml")["spec"]["ports"][0].__setitem__("port", 50052), "port grpc"),
    ("PodMonitor port", lambda m: _doc(m, K8S + "podmonitor.yaml")["spec"]["podMetricsEndpoints"][0]
     .__setitem__("port", "http"), "PodMonitor"),
    ("ScaledObject query", lambda m: _doc(m, K8S + "scaledobject.yaml")["spec"]["triggers"][0]["metadata"]
     .__setitem__("query", "sum(up)"), "moeserve_num_requests_waiting"),
    ("ScaledObject target", lambda m: _doc(m, K8S + "scaledobject.yaml")["spec"]["scaleTargetRef"]
     .__setitem__("name", "other"), "scaleTargetRef"),
    ("kustomization", lambda m: _doc(m, K8S + "kustomization.yaml")["resources"].pop(), "kustomization"),
    ("README target", lambda m: _replace(m, K8S + "README.md", "moeserve-headless.moeserve.svc", "x.moeserve.svc", -1),
     "dns:///"),
]


def selftest(m, moeserve):
    failed = 0
    for what, mutate, expect in MUTATIONS:
        if expect == "check_config" and not moeserve:
            continue
        mm = copy.deepcopy(m)
        mutate(mm)
        errors = run_checks(mm, moeserve)
        if not any(expect in e for e in errors):
            failed += 1
            print(f"FAIL selftest: mutation '{what}' not reported (want '{expect}'); got {errors}")
    print(f"selftest: {len(MUTATIONS)} mutations")
    return failed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    ap.add_argument("--moeserve", help="built moeserve binary, to run --check_config on the configs")
    ap.add_argument("--selftest", action="store_true", help="also assert every mutation in MUTATIONS is caught")
    a = ap.parse_args()
    if a.moeserve and not os.access(a.moeserve, os.X_OK):
        print(f"error: --moeserve {a.moeserve}: not an executable", file=sys.stderr)
        return 2
    m = load(os.path.abspath(a.repo))
    errors = run_checks(m, a.moeserve)
    for e in errors:
        print(f"FAIL {e}")
    if not a.moeserve:
        print("note: --moeserve not given, configs not run through moeserve --check_config")
    failed = len(errors) + (selftest(m, a.moeserve) if a.selftest and not errors else 0)
    print(f"{0 if failed else 1} passed, {1 if failed else 0} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
