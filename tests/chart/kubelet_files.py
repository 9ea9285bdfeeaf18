"""Kubelet's rules for the files of Secret, ConfigMap and projected volumes, and who can read them.

A small pure model of what kubelet does, so the chart tests can check every file every rendered
container mounts without a cluster, and the pod runner (podrunner.py) can lay the files out on
disk exactly so. Read in the kubelet source of kubernetes v1.31 (v1.31.1 as vendored by
ceph/ceph-csi, v1.31.12 as vendored by kubeedge/kubeedge; these files are the same in v1.32.10):

- pkg/volume/secret/secret.go, pkg/volume/configmap/configmap.go (MakePayload): a file per key,
  or per `items` entry; its mode is the item's `mode`, else the volume's `defaultMode`. Kubelet
  (root) writes them; no owner is set, so they are root:root. The volumes are read-only
  (`GetAttributes`), and `SetUpAt` calls SetVolumeOwnership with the pod's fsGroup.
- pkg/apis/core/v1/defaults.go: `defaultMode` defaults to 0644 (secret, configMap, projected).
- pkg/volume/projected/projected.go (collectData): one `defaultMode` for every source; a service
  account token gets 0600 and the owner FsUser when the pod has an fsGroup or an FsUser.
- pkg/volume/util/util.go (FsUserFrom): FsUser is the runAsUser every container sets explicitly
  and shares; none when one container sets none or two differ.
- pkg/volume/util/atomic_writer.go (Write): files go into `..<UTC %Y_%m_%d_%H_%M_%S>.<random>`
  (chmod 0755), written with their mode (chmod, so no umask), chown'ed to FsUser when set;
  SetVolumeOwnership runs on the whole volume; then `..data` -> that dir, and one symlink per
  top-level name -> `..data/<name>`.
- pkg/volume/volume_linux.go (SetVolumeOwnership): nothing without fsGroup. With it, every path
  gets group fsGroup (lchown), and every non-symlink gets mode | 0440 (read-only volumes;
  0660 for read-write ones such as emptyDir), directories also | setgid | 0110.
- pkg/volume/emptydir/empty_dir.go: these volumes wrap a memory emptyDir, so the mount point is
  the root of a tmpfs mounted without a mode option: 1777 root:root; the emptyDir's own
  SetVolumeOwnership (read-write) runs first.
- pkg/securitycontext/util.go (DetermineEffectiveSecurityContext): a container's runAsUser,
  runAsGroup and capabilities override the pod's; fsGroup and supplementalGroups exist only on
  the pod. pkg/kubelet/kuberuntime/security_context.go: fsGroup and every supplementalGroup are
  supplementary groups of each container.

Left out: subdirectories inside a payload (MkdirAll under kubelet's umask, assumed 022 -> 0755),
DownwardAPI content, SELinux, user namespaces. An unset runAsUser is the image's user; an unset
runAsGroup with a set runAsUser is whatever the runtime finds in the image's /etc/passwd, which
this model does not assume (it is no group of the container).
"""

from __future__ import annotations

import base64
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Optional

DEFAULT_MODE = 0o644  # pkg/apis/core/v1/defaults.go
TMPFS_ROOT_MODE = 0o1777  # a tmpfs mounted without mode=
TIMESTAMP_DIR_MODE = 0o755  # atomic_writer.go newTimestampDir
PAYLOAD_SUBDIR_MODE = 0o755  # MkdirAll(0777) under an assumed kubelet umask of 022
RO_MASK, RW_MASK, EXEC_MASK = 0o440, 0o660, 0o110  # volume_linux.go
DATA_DIR = "..data"

# Looks up a rendered object by kind and name; None when the chart does not render it.
Lookup = Callable[[str, str], Optional[dict[str, Any]]]


@dataclass(frozen=True)
class Node:
    """One path inside a volume as kubelet leaves it ("" is the mount point itself)."""

    path: str
    kind: str  # "dir", "file" or "symlink"
    uid: int
    gid: int
    mode: int  # permission bits with setgid and sticky; 0o777 for symlinks (not used)
    target: str = ""  # symlinks: the relative target
    data: bytes = b""  # files: the content, when known

    def describe(self) -> str:
        return f"{self.path or '.'} {self.kind} {self.uid}:{self.gid} {self.mode:04o}"


@dataclass(frozen=True)
class Identity:
    """Who a container's process is: uid, primary and supplementary groups, root's override."""

    uid: int
    gids: frozenset[int]
    dac_override: bool = False

    def describe(self) -> str:
        override = " (CAP_DAC_OVERRIDE)" if self.dac_override else ""
        return f"uid {self.uid} groups {sorted(self.gids)}{override}"


class ModelError(ValueError):
    """The volume or pod uses something this model does not cover."""


def pod_containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec.get("containers", []),
            *pod_spec.get("ephemeralContainers", [])]


def fs_user(pod_spec: dict[str, Any]) -> Optional[int]:
    """FsUserFrom (pkg/volume/util/util.go): the explicit runAsUser all containers share."""
    pod_sc = pod_spec.get("securityContext") or {}
    found: Optional[int] = None
    for container in pod_containers(pod_spec):
        sc = container.get("securityContext") or {}
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if uid is None or (found is not None and found != uid):
            return None
        found = uid
    return found


def identity(pod_spec: dict[str, Any], container: dict[str, Any],
             image_user: tuple[int, int]) -> Identity:
    """The process identity kubelet asks the runtime for (container fields override the pod's)."""
    pod_sc = pod_spec.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    explicit_uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    uid = image_user[0] if explicit_uid is None else explicit_uid
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    gids: set[int] = set()
    if gid is not None:
        gids.add(gid)
    elif explicit_uid is None:
        gids.add(image_user[1])  # the image's USER uid:gid
    if pod_sc.get("fsGroup") is not None:
        gids.add(pod_sc["fsGroup"])
    gids.update(pod_sc.get("supplementalGroups") or [])
    dropped = set((sc.get("capabilities") or {}).get("drop") or [])
    override = sc.get("privileged") is True or (
        uid == 0 and not dropped & {"ALL", "DAC_OVERRIDE", "CAP_DAC_OVERRIDE"})
    return Identity(uid=uid, gids=frozenset(gids), dac_override=override)


def _key_files(data: dict[str, bytes], items: Optional[list[dict[str, Any]]], default_mode: int,
               optional: bool, what: str) -> dict[str, tuple[bytes, int]]:
    """MakePayload: path -> (content, mode)."""
    if not items:
        return {key: (value, default_mode) for key, value in data.items()}
    files = {}
    for item in items:
        if item["key"] not in data:
            if optional:
                continue
            raise ModelError(f"{what} has no key {item['key']!r}")
        files[item["path"]] = (data[item["key"]], item.get("mode", default_mode))
    return files


def _object_data(kind: str, name: str, items: Optional[list[dict[str, Any]]],
                 lookup: Lookup) -> dict[str, bytes]:
    obj = lookup(kind, name)
    if obj is None:
        # Not rendered by the chart (e.g. auth.existingSecret): the keys the volume names, with
        # unknown content. Without items the file names are unknown.
        if not items:
            raise ModelError(f"{kind} {name} is not rendered and the volume lists no items")
        return {item["key"]: b"" for item in items}
    if kind == "Secret":
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        data.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
        return data
    data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return data


def payload(volume: dict[str, Any], pod_spec: dict[str, Any],
            lookup: Lookup) -> dict[str, tuple[bytes, int, Optional[int]]]:
    """What kubelet writes for a volume: relative path -> (content, mode, owner uid or None)."""
    fs_group = (pod_spec.get("securityContext") or {}).get("fsGroup")
    files: dict[str, tuple[bytes, int, Optional[int]]] = {}
    if "secret" in volume or "configMap" in volume:
        kind = "Secret" if "secret" in volume else "ConfigMap"
        source = volume["secret"] if kind == "Secret" else volume["configMap"]
        name = source["secretName"] if kind == "Secret" else source["name"]
        data = _object_data(kind, name, source.get("items"), lookup)
        for path, (content, mode) in _key_files(
                data, source.get("items"), source.get("defaultMode", DEFAULT_MODE),
                bool(source.get("optional")), f"{kind} {name}").items():
            files[path] = (content, mode, None)
        return files
    if "projected" in volume:
        projected = volume["projected"]
        default_mode = projected.get("defaultMode", DEFAULT_MODE)
        owner = fs_user(pod_spec)
        for source in projected.get("sources", []):
            if "secret" in source or "configMap" in source:
                kind = "Secret" if "secret" in source else "ConfigMap"
                src = source["secret"] if kind == "Secret" else source["configMap"]
                data = _object_data(kind, src["name"], src.get("items"), lookup)
                for path, (content, mode) in _key_files(
                        data, src.get("items"), default_mode, bool(src.get("optional")),
                        f"{kind} {src['name']}").items():
                    files[path] = (content, mode, None)
            elif "serviceAccountToken" in source:
                # projected.go: 0600 when fsGroup or FsUser is set (SetVolumeOwnership then adds
                # 0440 for fsGroup), owned by FsUser.
                mode = 0o600 if (owner is not None or fs_group is not None) else default_mode
                files[source["serviceAccountToken"]["path"]] = (b"", mode, owner)
            elif "downwardAPI" in source:
                for item in source["downwardAPI"].get("items", []):
                    files[item["path"]] = (b"", item.get("mode", default_mode), None)
            else:
                raise ModelError(f"projected source {sorted(source)} is not modelled")
        return files
    raise ModelError(f"volume {volume.get('name')} is not a Secret, ConfigMap or projected volume")


def _set_ownership(node: Node, fs_group: int, mask: int) -> Node:
    """changeFilePermission (volume_linux.go): lchown to fsGroup; chmod all but symlinks."""
    if node.kind == "symlink":
        return Node(node.path, node.kind, node.uid, fs_group, node.mode, node.target)
    mode = node.mode | mask
    if node.kind == "dir":
        mode |= stat.S_ISGID | EXEC_MASK
    return Node(node.path, node.kind, node.uid, fs_group, mode, node.target, node.data)


def timestamp_dir(now: datetime, suffix: str = "000000001") -> str:
    """MkdirTemp(targetDir, now.UTC().Format("..2006_01_02_15_04_05."))."""
    return now.astimezone(timezone.utc).strftime("..%Y_%m_%d_%H_%M_%S.") + suffix


def volume_layout(volume: dict[str, Any], pod_spec: dict[str, Any], lookup: Lookup,
                  now: Optional[datetime] = None) -> list[Node]:
    """Every path of a Secret, ConfigMap or projected volume as kubelet leaves it, root first."""
    files = payload(volume, pod_spec, lookup)
    fs_group = (pod_spec.get("securityContext") or {}).get("fsGroup")
    ts = timestamp_dir(now or datetime(2025, 1, 1, tzinfo=timezone.utc))
    root = Node("", "dir", 0, 0, TMPFS_ROOT_MODE)
    if fs_group is not None:
        root = _set_ownership(root, fs_group, RW_MASK)  # the wrapped emptyDir (read-write)
    written = [Node(ts, "dir", 0, 0, TIMESTAMP_DIR_MODE)]
    subdirs: set[str] = set()
    for path, (content, mode, owner) in sorted(files.items()):
        parts = path.split("/")
        if any(p in ("", ".", "..") or p.startswith("..") for p in parts):
            raise ModelError(f"invalid payload path {path!r}")
        for i in range(1, len(parts)):
            subdirs.add("/".join(parts[:i]))
        written.append(Node(f"{ts}/{path}", "file", 0 if owner is None else owner, 0, mode,
                            data=content))
    written += [Node(f"{ts}/{d}", "dir", 0, 0, PAYLOAD_SUBDIR_MODE) for d in sorted(subdirs)]
    nodes = [root, *written]
    if fs_group is not None:  # setPerms, before ..data and the visible links exist
        nodes = [_set_ownership(n, fs_group, RO_MASK) for n in nodes]
    nodes.append(Node(DATA_DIR, "symlink", 0, 0, 0o777, target=ts))
    for top in sorted({p.split("/")[0] for p in files}):
        nodes.append(Node(top, "symlink", 0, 0, 0o777, target=f"{DATA_DIR}/{top}"))
    return nodes


def visible_files(volume: dict[str, Any], pod_spec: dict[str, Any], lookup: Lookup) -> list[str]:
    """The paths a container opens: one per payload file, through the symlinks."""
    return sorted(payload(volume, pod_spec, lookup))


def _allowed(node: Node, who: Identity, bit: int) -> bool:
    """Linux DAC without ACLs: owner bits, else group bits, else other bits (bit: 4 r, 1 x)."""
    if who.dac_override:
        return True
    if who.uid == node.uid:
        return bool(node.mode & (bit << 6))
    if node.gid in who.gids:
        return bool(node.mode & (bit << 3))
    return bool(node.mode & bit)


def resolve(nodes: list[Node], path: str) -> list[Node]:
    """The nodes opened to reach path from the mount point: directories searched, then the file."""
    by_path = {n.path: n for n in nodes}
    todo = [p for p in path.split("/") if p]
    here: list[str] = []
    walked = [by_path[""]]
    hops = 0
    while todo:
        part = todo.pop(0)
        node = by_path.get("/".join([*here, part]))
        if node is None:
            raise ModelError(f"{path}: {'/'.join([*here, part])} does not exist")
        if node.kind == "symlink":
            hops += 1
            if hops > 40:
                raise ModelError(f"{path}: too many symlinks")
            todo = [p for p in node.target.split("/") if p] + todo
            continue
        if todo and node.kind != "dir":
            raise ModelError(f"{path}: {node.path} is not a directory")
        here.append(part)
        walked.append(node)
    return walked


def unreadable(nodes: list[Node], path: str, who: Identity) -> Optional[str]:
    """Why `who` cannot read the file at path (search every directory, read the file), or None."""
    walked = resolve(nodes, path)
    for node in walked[:-1]:
        if not _allowed(node, who, 1):
            return f"{path}: cannot search {node.describe()} as {who.describe()}"
    if not _allowed(walked[-1], who, 4):
        return f"{path}: cannot read {walked[-1].describe()} as {who.describe()}"
    return None
