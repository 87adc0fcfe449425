#!/usr/bin/env bash
# Install, upgrade or remove the pagedisk agent on this VM.
#
#   curl -fsSL https://<app>/api/agent/install.sh | sudo bash -s -- --join-token T
#
# In order: check every option before touching anything; find Node.js 22 or
# install it from nodejs.org (checked against SHASUMS256.txt); fetch the
# agent bundle from the control plane and check that it is one; join the
# cluster once (the node's credential goes to /var/lib/pagedisk/node.json,
# 0600); write /opt/pagedisk/pagedisk.mjs, /etc/pagedisk/agent.env and the
# systemd unit; install nbd-client and load the nbd module (or nbdfuse +
# loop where the kernel has no nbd module); start the unit.
#
# A re-run is an upgrade: new bundle, same identity, no second join. A file
# whose content is already right is not rewritten, so a second run with the
# same options changes nothing.
#
# The control plane serves this file with the next assignment filled in.
set -euo pipefail

CONTROL_PLANE_DEFAULT=""

readonly NODE_MAJOR=22
# Where Node.js tarballs come from; overridable for mirrors and air-gapped images.
readonly NODE_DIST="${PAGEDISK_NODE_DIST:-https://nodejs.org/dist/latest-v${NODE_MAJOR}.x}"
# The first line of the esbuild bundle (infra/build.mjs writes it).
readonly BUNDLE_SHEBANG='#!/usr/bin/env node'

readonly UNIT_NAME=pagedisk-agent.service
readonly OPT_DIR=/opt/pagedisk
readonly BUNDLE=/opt/pagedisk/pagedisk.mjs
readonly NODE_DIR=/opt/pagedisk/node
readonly ETC_DIR=/etc/pagedisk
readonly ENV_FILE=/etc/pagedisk/agent.env
readonly STATE_DIR=/var/lib/pagedisk
readonly UNIT_FILE=/etc/systemd/system/pagedisk-agent.service
readonly MODULES_FILE=/etc/modules-load.d/pagedisk-nbd.conf

usage() {
  cat <<'USAGE'
Usage: install-agent.sh --join-token TOKEN [options]
       install-agent.sh --uninstall [--purge] [--root DIR]

Installs the pagedisk agent as the systemd unit pagedisk-agent.service and
joins this VM to the cluster. Run it again to upgrade; the node keeps its
identity.

Options:
  --join-token TOKEN    join token (pagedisk token create); required unless
                        this VM has already joined
  --control-plane URL   control plane, e.g. https://myapp.azurewebsites.net
                        (default: the one that served this script)
  --name NAME           node name (default: the host name, lowercased)
  --kernel MODE         how volumes become block devices: auto (default),
                        nbd, fuse (nbdfuse + loop) or none
  --node PATH           use this Node.js 22 binary instead of finding or
                        installing one
  --bundle FILE         install this agent bundle instead of downloading it
  --root DIR            install under DIR instead of / (image builds, tests);
                        skips packages, modprobe and systemctl
  --no-start            install but do not enable or start the unit
  --uninstall           stop and remove the agent; keeps /var/lib/pagedisk
  --purge               with --uninstall: remove /var/lib/pagedisk too
  -h, --help            show this help
USAGE
}

say() { printf 'pagedisk: %s\n' "$*"; }
die() {
  printf 'pagedisk: error: %s\n' "$*" >&2
  exit 1
}
usage_error() {
  printf 'pagedisk: %s\n\n' "$*" >&2
  usage >&2
  exit 2
}
# Input that parses but is wrong: the message alone, without the whole usage.
bad_input() {
  printf 'pagedisk: %s\n(install-agent.sh --help shows the options)\n' "$*" >&2
  exit 2
}
skipped() { say "skipped (--root): $*"; }

# ---------------------------------------------------------------- options

JOIN_TOKEN=""
CONTROL_PLANE=""
NAME=""
KERNEL=""
NODE_OPT=""
BUNDLE_OPT=""
ROOT=""
ROOT_GIVEN=0
NO_START=0
UNINSTALL=0
PURGE=0
# Options that make no sense with --uninstall, to refuse them by name.
INSTALL_ONLY=()

while (($# > 0)); do
  # --opt=value is the same as --opt value.
  if [[ $1 == --*=* ]]; then
    set -- "${1%%=*}" "${1#*=}" "${@:2}"
  fi
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --join-token | --control-plane | --name | --kernel | --node | --bundle | --root)
      # No value starts with "-": "--join-token --name x" is a forgotten token, not a token.
      if (($# < 2)) || [[ -z $2 || $2 == -* ]]; then usage_error "$1 needs a value"; fi
      case $1 in
        --join-token) JOIN_TOKEN=$2 ;;
        --control-plane) CONTROL_PLANE=$2 ;;
        --name) NAME=$2 ;;
        --kernel) KERNEL=$2 ;;
        --node) NODE_OPT=$2 ;;
        --bundle) BUNDLE_OPT=$2 ;;
        --root)
          ROOT=$2
          ROOT_GIVEN=1
          ;;
      esac
      [[ $1 == --root ]] || INSTALL_ONLY+=("$1")
      shift 2
      ;;
    --no-start)
      NO_START=1
      INSTALL_ONLY+=("$1")
      shift
      ;;
    --uninstall)
      UNINSTALL=1
      shift
      ;;
    --purge)
      PURGE=1
      shift
      ;;
    *) usage_error "unknown option: $1" ;;
  esac
done

if ((PURGE && !UNINSTALL)); then bad_input "--purge only goes with --uninstall"; fi
if ((UNINSTALL && ${#INSTALL_ONLY[@]} > 0)); then
  bad_input "--uninstall takes only --root and --purge, not ${INSTALL_ONLY[*]}"
fi
if ((ROOT_GIVEN)); then
  [[ $ROOT == /* ]] || bad_input "--root needs an absolute path, not $ROOT"
  [[ -d $ROOT ]] || bad_input "--root $ROOT is not a directory"
  # Strip trailing slashes so "$ROOT$path" never doubles them; / becomes "".
  while [[ $ROOT == */ ]]; do ROOT=${ROOT%/}; done
fi

# A path on the system being installed (under --root when given).
at() { printf '%s%s' "$ROOT" "$1"; }

# ------------------------------------------------------------ file writing

# Put $1 at $2 with mode $3 unless $2 already has that content: an
# unchanged file keeps its mtime (and its directory is not touched). A new
# content goes to a temp file beside the target first, so the switch is
# one rename. Returns 0 when it wrote, 1 when the file was already right.
place() {
  local src=$1 dest=$2 mode=$3
  if [[ -f $dest ]] && cmp -s "$src" "$dest"; then
    [[ $(stat -c %a "$dest") == "$mode" ]] || chmod "$mode" "$dest"
    return 1
  fi
  local tmp
  tmp=$(mktemp "$dest.new.XXXXXX")
  cp "$src" "$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$dest"
  say "wrote ${dest#"$ROOT"}"
}

# `place` for text given as $3.
place_text() {
  local dest=$1 mode=$2 text=$3 staged
  staged=$(mktemp "$WORK/text.XXXXXX")
  printf '%s' "$text" >"$staged"
  place "$staged" "$dest" "$mode"
}

# mkdir -p with a mode, leaving an existing directory's mtime alone.
ensure_dir() {
  local dir=$1 mode=$2
  [[ -d $dir ]] || mkdir -p "$dir"
  [[ $(stat -c %a "$dir") == "$mode" ]] || chmod "$mode" "$dir"
}

# Download $1 to $2.
fetch() {
  if command -v curl >/dev/null; then
    curl -fsSL --retry 3 -o "$2" "$1"
  elif command -v wget >/dev/null; then
    wget -q -O "$2" "$1"
  else
    die "neither curl nor wget is installed; cannot download $1"
  fi
}

# The value of KEY in a KEY=VALUE file, quotes removed. The file is parsed,
# never sourced: under --root it belongs to someone else's image.
value_in() {
  local key=$1 file=$2
  [[ -f $file ]] || return 0
  sed -n "s/^$key=//p" "$file" | head -n 1 | sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'$/\1/"
}

# ---------------------------------------------------------------- uninstall

uninstall() {
  if ((!ROOT_GIVEN)) && ((EUID != 0)); then die "run as root (sudo) to uninstall"; fi
  if [[ -f $(at "$UNIT_FILE") ]]; then
    if ((ROOT_GIVEN)); then
      skipped "systemctl disable --now $UNIT_NAME"
    else
      # A unit that never started is fine to "stop"; a failure here must not keep its files.
      systemctl disable --now "$UNIT_NAME" || say "warning: systemctl disable --now $UNIT_NAME failed"
      say "stopped and disabled $UNIT_NAME"
    fi
  fi
  local removed=0 path
  for path in "$UNIT_FILE" "$BUNDLE" "$ENV_FILE" "$MODULES_FILE"; do
    if [[ -e $(at "$path") ]]; then
      rm -f "$(at "$path")"
      say "removed $path"
      removed=1
    fi
  done
  if [[ -d $(at "$NODE_DIR") ]]; then
    rm -rf "$(at "$NODE_DIR")"
    say "removed $NODE_DIR (the Node.js this script installed)"
    removed=1
  fi
  # Our own directories go once empty; anything someone else put there stays.
  for path in "$OPT_DIR" "$ETC_DIR"; do
    if [[ -d $(at "$path") ]]; then rmdir "$(at "$path")" 2>/dev/null || true; fi
  done
  if ((removed)) && ((!ROOT_GIVEN)); then systemctl daemon-reload; fi
  if ((removed == 0)); then say "no agent files were installed"; fi
  if [[ -d $(at "$STATE_DIR") ]]; then
    if ((PURGE)); then
      rm -rf "$(at "$STATE_DIR")"
      say "removed $STATE_DIR (the node's credential);" \
        "remove the node from the cluster too: pagedisk node remove <name>"
    else
      say "kept $STATE_DIR (the node's identity, for a later reinstall; --purge removes it)"
    fi
  fi
  say "packages (nbd-client, nbdfuse) were left installed"
}

if ((UNINSTALL)); then
  uninstall
  exit 0
fi

# ------------------------------------------------------- install: checks

if ((!ROOT_GIVEN)) && ((EUID != 0)); then die "run as root (sudo), or use --root DIR"; fi

JOINED=0
[[ -f $(at "$STATE_DIR")/node.json ]] && JOINED=1
EXISTING_ENV=$(at "$ENV_FILE")

# The URL the user gave, else the control plane that served this script, else the one of the last install.
CONTROL_PLANE=${CONTROL_PLANE:-${CONTROL_PLANE_DEFAULT:-$(value_in PAGEDISK_CONTROL_PLANE "$EXISTING_ENV")}}
[[ -n $CONTROL_PLANE ]] || bad_input "no control plane: pass --control-plane URL"
while [[ $CONTROL_PLANE == */ ]]; do CONTROL_PLANE=${CONTROL_PLANE%/}; done
# Scheme, host (a name or a bracketed IPv6 address), port, path: nothing a shell or a unit file would read.
url='^(https?)://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$'
if [[ ! $CONTROL_PLANE =~ $url ]]; then
  bad_input "--control-plane must be an http(s) URL such as https://myapp.azurewebsites.net," \
    "not $CONTROL_PLANE"
fi
# The join token and, later, the node's credential travel to this URL: never in clear text off this machine.
if [[ ${BASH_REMATCH[1]} == http && ! ${BASH_REMATCH[2]} =~ ^(localhost|127\.[0-9.]+|\[::1\])$ ]]; then
  bad_input "--control-plane must use https (plain http is allowed only for localhost), not $CONTROL_PLANE"
fi

if ((!JOINED)); then
  [[ -n $JOIN_TOKEN ]] || bad_input "--join-token TOKEN is required: this VM has not joined yet" \
    "($STATE_DIR/node.json does not exist). Create a token with: pagedisk token create"
  [[ $JOIN_TOKEN =~ ^[A-Za-z0-9_-]{1,512}$ ]] || bad_input "--join-token is not a pagedisk join token"
  if [[ -z $NAME ]]; then
    NAME=$(uname -n)
    NAME=${NAME,,}
  fi
  # The API's node name rule (contract/names.ts), checked here so a bad name fails before anything changes.
  label='[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?'
  if ((${#NAME} > 253)) || [[ ! $NAME =~ ^$label(\.$label)*$ ]]; then
    bad_input "node name '$NAME' is not a lowercase DNS name; pass --name NAME"
  fi
else
  # node.json names the API root it joined (origin + /api/v1); the unit must point at the same one.
  joined_to=$(sed -n 's/.*"controlPlane"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' \
    "$(at "$STATE_DIR")/node.json" | head -n 1)
  if [[ -n $joined_to && $joined_to != "$CONTROL_PLANE" && $joined_to != "$CONTROL_PLANE/api/v1" ]]; then
    bad_input "this VM joined $joined_to, not $CONTROL_PLANE: to move it to another cluster," \
      "run --uninstall --purge first (and remove the node from the old one)"
  fi
  if [[ -n $JOIN_TOKEN || -n $NAME ]]; then
    say "already joined ($STATE_DIR/node.json exists): --join-token and --name are not used"
  fi
fi

KERNEL=${KERNEL:-$(value_in PAGEDISK_KERNEL "$EXISTING_ENV")}
KERNEL=${KERNEL:-auto}
case $KERNEL in
  auto | nbd | fuse | none) ;;
  *) bad_input "--kernel must be auto, nbd, fuse or none, not $KERNEL" ;;
esac

# The major version of the node at $1, or nothing if it does not run.
node_major() {
  "$1" --version 2>/dev/null | sed -n 's/^v\([0-9][0-9]*\)\..*/\1/p'
}

if [[ -n $NODE_OPT ]]; then
  [[ $NODE_OPT == /* && -x $NODE_OPT ]] || bad_input "--node must be the absolute path of an executable, not $NODE_OPT"
  [[ $(node_major "$NODE_OPT") == "$NODE_MAJOR" ]] ||
    bad_input "--node $NODE_OPT is not Node.js $NODE_MAJOR ($("$NODE_OPT" --version 2>&1 || true))"
fi
if [[ -n $BUNDLE_OPT ]]; then
  [[ -f $BUNDLE_OPT && -r $BUNDLE_OPT ]] || bad_input "--bundle $BUNDLE_OPT is not a readable file"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pagedisk-install.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------- distribution

OS_RELEASE=$(at /etc/os-release)
[[ -f $OS_RELEASE ]] || OS_RELEASE=$(at /usr/lib/os-release)
OS_ID=$(value_in ID "$OS_RELEASE")
OS_LIKE=$(value_in ID_LIKE "$OS_RELEASE")
OS_NAME=$(value_in PRETTY_NAME "$OS_RELEASE")
PKG=""
for id in $OS_ID $OS_LIKE; do
  case $id in
    ubuntu | debian) PKG=apt-get ;;
    azurelinux | mariner) PKG=tdnf ;;
    rhel | centos | fedora | rocky | almalinux | ol)
      if ((ROOT_GIVEN)) || command -v dnf >/dev/null; then PKG=dnf; else PKG=yum; fi
      ;;
    *) continue ;;
  esac
  break
done
say "system: ${OS_NAME:-unknown (no os-release)}${PKG:+, packages with $PKG}"

# Install packages $2.. unless command $1 is already there.
ensure_packages() {
  local command=$1
  shift
  if ((ROOT_GIVEN)); then
    skipped "${PKG:-<package manager>} install $*"
    return
  fi
  if command -v "$command" >/dev/null; then
    say "$command is installed"
    return
  fi
  say "installing $*"
  case $PKG in
    apt-get)
      export DEBIAN_FRONTEND=noninteractive
      # A fresh VM's package lists may be missing or stale: update once and retry.
      apt-get install -y --no-install-recommends "$@" ||
        { apt-get update && apt-get install -y --no-install-recommends "$@"; }
      ;;
    dnf | yum | tdnf) "$PKG" install -y "$@" ;;
    *) die "unsupported distribution ${OS_ID:-unknown}: install $* yourself, then run this again" ;;
  esac
  command -v "$command" >/dev/null || die "$* installed, but $command is still missing"
}

# ------------------------------------------------------------------ Node.js

# Sets NODE_RUN (the node to run now) and NODE_UNIT (its path on the
# installed system, for the unit).
install_node() {
  local arch
  case $(uname -m) in
    x86_64) arch=x64 ;;
    aarch64 | arm64) arch=arm64 ;;
    armv7l) arch=armv7l ;;
    ppc64le) arch=ppc64le ;;
    s390x) arch=s390x ;;
    *) die "no official Node.js $NODE_MAJOR build for $(uname -m); install it and pass --node PATH" ;;
  esac
  say "installing Node.js $NODE_MAJOR ($arch) from $NODE_DIST"
  fetch "$NODE_DIST/SHASUMS256.txt" "$WORK/SHASUMS256.txt"
  local line sum file
  local pattern="^[0-9a-f]{64}  node-v${NODE_MAJOR}\.[0-9]+\.[0-9]+-linux-$arch\.tar\.gz$"
  line=$(grep -E "$pattern" "$WORK/SHASUMS256.txt" | head -n 1) ||
    die "no linux-$arch tarball of Node.js $NODE_MAJOR in $NODE_DIST/SHASUMS256.txt"
  sum=${line%% *}
  file=${line##* }
  fetch "$NODE_DIST/$file" "$WORK/$file"
  [[ $(sha256sum "$WORK/$file" | cut -d ' ' -f 1) == "$sum" ]] ||
    die "$file does not match its SHA-256 in SHASUMS256.txt; nothing installed"
  mkdir "$WORK/node"
  tar -xzf "$WORK/$file" -C "$WORK/node" --strip-components=1 --no-same-owner
  [[ $(node_major "$WORK/node/bin/node") == "$NODE_MAJOR" ]] || die "$file does not contain a working Node.js $NODE_MAJOR"
  ensure_dir "$(at "$OPT_DIR")" 755
  rm -rf "$(at "$NODE_DIR").new"
  cp -a "$WORK/node" "$(at "$NODE_DIR").new"
  rm -rf "$(at "$NODE_DIR")"
  mv "$(at "$NODE_DIR").new" "$(at "$NODE_DIR")"
  say "installed ${file%.tar.gz} into $NODE_DIR (SHA-256 checked against SHASUMS256.txt)"
}

ensure_node() {
  local candidate
  if [[ -n $NODE_OPT ]]; then
    NODE_RUN=$NODE_OPT
    NODE_UNIT=$NODE_OPT
  else
    # Ours first (an upgrade keeps it), then the system's: under --root only what is inside the root.
    local candidates=("$NODE_DIR/bin/node")
    if ((ROOT_GIVEN)); then
      candidates+=(/usr/bin/node /usr/local/bin/node)
    elif candidate=$(command -v node); then
      candidates+=("$candidate")
    fi
    NODE_UNIT=""
    for candidate in "${candidates[@]}"; do
      if [[ $(node_major "$(at "$candidate")") == "$NODE_MAJOR" ]]; then
        NODE_UNIT=$candidate
        break
      fi
    done
    if [[ -z $NODE_UNIT ]]; then
      install_node
      NODE_UNIT=$NODE_DIR/bin/node
    fi
    NODE_RUN=$(at "$NODE_UNIT")
  fi
  # The unit's ExecStart takes it verbatim.
  [[ $NODE_UNIT =~ ^/[A-Za-z0-9._/+-]+$ ]] || die "Node.js path $NODE_UNIT has characters a systemd unit cannot take"
  say "Node.js $("$NODE_RUN" --version): $NODE_UNIT"
}

# ------------------------------------------------------------------- bundle

# Leaves the checked bundle in $WORK/pagedisk.mjs and its version in AGENT_VERSION.
stage_bundle() {
  local staged=$WORK/pagedisk.mjs first
  if [[ -n $BUNDLE_OPT ]]; then
    cp "$BUNDLE_OPT" "$staged"
  else
    say "downloading the agent from $CONTROL_PLANE/api/agent/pagedisk.mjs"
    fetch "$CONTROL_PLANE/api/agent/pagedisk.mjs" "$staged" || die "could not download the agent from $CONTROL_PLANE"
  fi
  # An error page or a truncated download must never replace a working agent.
  IFS= read -r first <"$staged" || true
  if [[ $first != "$BUNDLE_SHEBANG" ]] && ! "$NODE_RUN" --check "$staged" 2>/dev/null; then
    die "${BUNDLE_OPT:-the download} is not the pagedisk agent bundle (no '$BUNDLE_SHEBANG' line, not JavaScript)"
  fi
  AGENT_VERSION=$("$NODE_RUN" "$staged" --version) || die "the agent bundle does not run with $NODE_UNIT"
  say "agent $AGENT_VERSION"
}

# --------------------------------------------------------------------- join

join_cluster() {
  if ((JOINED)); then
    chmod 600 "$(at "$STATE_DIR")/node.json"
    say "already joined ($STATE_DIR/node.json): upgrading, same identity"
    return
  fi
  local state created
  state=$(at "$STATE_DIR")
  # The topmost directory this join creates (under --root, var/ perhaps), to remove if it fails.
  created=$state
  while [[ ! -d $(dirname "$created") ]]; do created=$(dirname "$created"); done
  [[ -d $state ]] && created=""
  ensure_dir "$state" 700
  say "joining $CONTROL_PLANE as $NAME"
  # The agent prints its own line; its JSON info log would only clutter an install.
  # The token goes in the environment, not argv: any user on the VM can read argv in ps.
  if ! PAGEDISK_JOIN_TOKEN=$JOIN_TOKEN PAGEDISK_LOG_LEVEL=warn "$NODE_RUN" "$WORK/pagedisk.mjs" agent join \
    --control-plane "$CONTROL_PLANE" --state-dir "$state" --name "$NAME"; then
    # Nothing else is installed yet; a state dir we made for nothing goes too.
    if [[ -n $created && ! -e $state/node.json ]]; then rm -rf "$created"; fi
    die "could not join the cluster (see above); nothing was installed"
  fi
  [[ -f $state/node.json ]] || die "agent join succeeded but wrote no $STATE_DIR/node.json"
  # The credential is a secret whatever umask the join ran with.
  chmod 600 "$state/node.json"
  say "joined as $NAME"
}

# ------------------------------------------------------------------ kernel

# nbd when the kernel has the module (loaded, built in, or on disk), else nbdfuse + loop.
nbd_module_available() {
  if ((ROOT_GIVEN)); then
    compgen -G "$ROOT/lib/modules/*/kernel/drivers/block/nbd.ko*" >/dev/null ||
      compgen -G "$ROOT/usr/lib/modules/*/kernel/drivers/block/nbd.ko*" >/dev/null
  else
    [[ -d /sys/module/nbd ]] || modprobe -n -q nbd 2>/dev/null
  fi
}

KERNEL_PLAN=""
choose_kernel_binding() {
  case $KERNEL in
    none) KERNEL_PLAN=none ;;
    fuse) KERNEL_PLAN=fuse ;;
    nbd)
      nbd_module_available || die "--kernel nbd, but this kernel has no nbd module (use --kernel auto or fuse)"
      KERNEL_PLAN=nbd
      ;;
    auto) if nbd_module_available; then KERNEL_PLAN=nbd; else KERNEL_PLAN=fuse; fi ;;
  esac
}

setup_kernel() {
  case $KERNEL_PLAN in
    none)
      say "kernel binding: none (--kernel none): volumes are served over NBD only"
      ;;
    nbd)
      say "kernel binding: nbd (the kernel's nbd module, /dev/nbdX through nbd-client)"
      if [[ $PKG == apt-get ]]; then ensure_packages nbd-client nbd-client; else ensure_packages nbd-client nbd; fi
      ensure_dir "$(at "$(dirname "$MODULES_FILE")")" 755
      local modules=$'# Written by pagedisk install-agent.sh: the agent binds volumes to /dev/nbdX.\nnbd\n'
      place_text "$(at "$MODULES_FILE")" 644 "$modules" || true
      if ((ROOT_GIVEN)); then skipped "modprobe nbd"; else modprobe nbd; fi
      ;;
    fuse)
      if [[ $KERNEL == fuse ]]; then
        say "kernel binding: nbdfuse + loop (--kernel fuse)"
      else
        say "kernel binding: nbdfuse + loop (this kernel has no nbd module)"
      fi
      if [[ $PKG == apt-get ]]; then ensure_packages nbdfuse libnbd-bin fuse3; else ensure_packages nbdfuse nbdfuse fuse3; fi
      # Both are usually built in or load on first use of /dev/loop-control and /dev/fuse.
      if ((ROOT_GIVEN)); then skipped "modprobe loop fuse"; else modprobe -a loop fuse || true; fi
      ;;
  esac
}

# -------------------------------------------------------------------- unit

# The unit, with the Node.js path $1 in ExecStart.
unit_text() {
  local text
  text=$(
    cat <<'UNIT'
# pagedisk agent. Written by install-agent.sh; a re-run rewrites it.
[Unit]
Description=pagedisk agent (Azure page blobs as block devices)
Wants=network-online.target
After=network-online.target
# A crash loop stops after 10 starts in 5 minutes instead of spinning;
# `systemctl reset-failed pagedisk-agent` re-arms it.
StartLimitIntervalSec=300
StartLimitBurst=10

[Service]
Type=simple
EnvironmentFile=/etc/pagedisk/agent.env
ExecStart=@NODE@ /opt/pagedisk/pagedisk.mjs agent run --control-plane ${PAGEDISK_CONTROL_PLANE} --state-dir /var/lib/pagedisk --kernel ${PAGEDISK_KERNEL}
Restart=always
RestartSec=5s
# The agent finishes requests in flight and flushes before it exits (30 s at most).
TimeoutStopSec=45s
# SIGTERM goes to the agent alone, so it can flush in its own order, and
# nothing else in the unit is killed when it has exited: the fuse-loop
# helpers (`pagedisk fuse-relay` and nbdfuse, one pair per volume) must
# outlive the agent, since they hold the loop device's FUSE file and the
# requests in flight while no agent serves them; the next agent re-adopts
# them (see agent/host/fuse-loop-driver.ts). KillMode=mixed or
# control-group would SIGKILL them at every restart, and a mounted
# filesystem would get I/O errors. They keep this start's private mount
# namespace (ProtectSystem, PrivateTmp), where their FUSE mount lives: the
# next agent finds that mount through nbdfuse's /proc/PID/mountinfo, and
# unbinding stops nbdfuse, which unmounts it there. The agent itself stops
# them when a volume is detached. Kernel nbd devices belong to the kernel,
# not to a process, so no KillMode touches them.
KillMode=process
# The agent backs mounted file systems: the OOM killer should pick others first.
OOMScoreAdjust=-900

# Hardening. Only root with CAP_SYS_ADMIN can configure nbd devices over
# netlink, attach loop devices and mount FUSE, so the agent keeps exactly
# that capability and nothing else.
CapabilityBoundingSet=CAP_SYS_ADMIN
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/var/lib/pagedisk
RuntimeDirectory=pagedisk
RuntimeDirectoryMode=0700
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
# This script loads nbd now and at boot (modules-load.d): the agent never needs to.
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectHostname=yes
UMask=0077
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
# System calls the agent never makes; mount, ioctl and netlink stay allowed.
SystemCallFilter=~@clock @cpu-emulation @debug @module @obsolete @raw-io @reboot @swap
SystemCallErrorNumber=EPERM
# Not set, on purpose:
# - MemoryDenyWriteExecute: V8's JIT needs writable-then-executable memory;
#   Node.js aborts at start under it.
# - PrivateDevices, DevicePolicy, ProtectClock (which implies a device
#   allow-list): the agent opens /dev/nbd*, /dev/loop* and /dev/fuse.

[Install]
WantedBy=multi-user.target
UNIT
  )
  printf '%s\n' "${text//@NODE@/$1}"
}

# -------------------------------------------------------------- installing

ensure_node
stage_bundle
choose_kernel_binding
join_cluster

CHANGED=0
ensure_dir "$(at "$OPT_DIR")" 755
ensure_dir "$(at "$ETC_DIR")" 755
ensure_dir "$(at "$STATE_DIR")" 700
ensure_dir "$(at /etc/systemd/system)" 755
place "$WORK/pagedisk.mjs" "$(at "$BUNDLE")" 644 && CHANGED=1
place_text "$(at "$ENV_FILE")" 600 "PAGEDISK_CONTROL_PLANE=$CONTROL_PLANE
PAGEDISK_KERNEL=$KERNEL
" && CHANGED=1
place_text "$(at "$UNIT_FILE")" 644 "$(unit_text "$NODE_UNIT")
" && CHANGED=1
((CHANGED)) || say "agent files are up to date"

setup_kernel

if ((ROOT_GIVEN)); then
  skipped "systemctl daemon-reload; systemctl enable --now $UNIT_NAME"
elif ((NO_START)); then
  say "not started (--no-start); start with: systemctl enable --now $UNIT_NAME"
else
  systemctl daemon-reload
  if ((CHANGED)) && systemctl is-active --quiet "$UNIT_NAME"; then
    systemctl enable "$UNIT_NAME"
    systemctl restart "$UNIT_NAME"
    say "restarted $UNIT_NAME (upgrade)"
  else
    systemctl enable --now "$UNIT_NAME"
    say "started $UNIT_NAME"
  fi
  say "status: systemctl status $UNIT_NAME; logs: journalctl -u $UNIT_NAME"
fi
say "done: agent $AGENT_VERSION, control plane $CONTROL_PLANE"
