"""The Pod Security Standards' "baseline" and "restricted" rules, checked on a pod spec.

Written from the published standard (the same controls the PodSecurity admission plugin
applies), so the manifests are checked without a cluster. Each finding names the workload,
the container (or the pod) and the field with its value.
"""

from __future__ import annotations

from typing import Any

SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
SELINUX_TYPES |= {"container_engine_t"}
RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
CONFINED = frozenset({"RuntimeDefault", "Localhost"})


def _security(where: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = where.get("securityContext") or {}
    return context


def violations(name: str, spec: dict[str, Any], annotations: dict[str, str]) -> set[str]:
    """Every way the pod `spec` of workload `name` breaks "restricted" (baseline included)."""
    found: set[str] = set()
    pod = _security(spec)

    def add(where: str, what: str) -> None:
        found.add(f"{name}/{where}: {what}")

    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            add("pod", f"{field}=true")
    for sysctl in pod.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            add("pod", f"sysctl {sysctl['name']}")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            add("pod", f"hostPath volume {volume['name']}")
        elif not kinds <= RESTRICTED_VOLUMES:
            add("pod", f"volume {volume['name']} of type {sorted(kinds - RESTRICTED_VOLUMES)}")
    for key, value in annotations.items():
        confined = value == "runtime/default" or value.startswith("localhost/")
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not confined:
            add(key.rsplit("/", 1)[1], f"AppArmor annotation {value}")

    def common(where: str, context: dict[str, Any]) -> None:
        """Fields that the pod and each container may set alike."""
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            add(where, "hostProcess=true")
        apparmor = (context.get("appArmorProfile") or {}).get("type")
        if apparmor is not None and apparmor not in CONFINED:
            add(where, f"appArmorProfile.type={apparmor}")
        selinux = context.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES:
            add(where, f"seLinuxOptions.type={selinux['type']}")
        for field in ("user", "role"):
            if selinux.get(field):
                add(where, f"seLinuxOptions.{field}={selinux[field]}")
        seccomp = (context.get("seccompProfile") or {}).get("type")
        if seccomp is not None and seccomp not in CONFINED:
            add(where, f"seccompProfile.type={seccomp}")
        if context.get("runAsNonRoot") is False:
            add(where, "runAsNonRoot=false")
        if context.get("runAsUser") == 0:
            add(where, "runAsUser=0")

    common("pod", pod)
    every = [
        *spec.get("initContainers", []),
        *spec["containers"],
        *spec.get("ephemeralContainers", []),
    ]
    for container in every:
        where, context = container["name"], _security(container)
        common(where, context)
        if context.get("privileged"):
            add(where, "privileged=true")
        if context.get("procMount", "Default") != "Default":
            add(where, f"procMount={context['procMount']}")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                add(where, f"hostPort={port['hostPort']}")
        capabilities = context.get("capabilities") or {}
        for capability in capabilities.get("add", []):
            # Baseline allows a dozen; restricted allows adding this one only.
            if capability != "NET_BIND_SERVICE":
                add(where, f"capabilities.add {capability}")
        if "ALL" not in capabilities.get("drop", []):
            add(where, "capabilities.drop lacks ALL")
        if context.get("allowPrivilegeEscalation") is not False:
            add(where, "allowPrivilegeEscalation is not false")
        if context.get("runAsNonRoot") is not True and pod.get("runAsNonRoot") is not True:
            add(where, "runAsNonRoot is not true")
        seccomp = (context.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
        if seccomp is None:
            add(where, "no seccompProfile")
    return found
