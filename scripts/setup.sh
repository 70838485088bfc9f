#!/usr/bin/env bash
# Idempotent set-up for toelab on Debian 12: apt packages, then a virtual environment
# (built from Debian's python3 with system site packages so `import mininet` works), then the
# engine's per-packet modules compiled with mypyc (scripts/build_native.py; skipped when their
# sources have not changed, and when TOELAB_PURE_PYTHON=1). Fast when everything is already
# there: it checks before it installs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$here/.venv"

apt_packages=(iproute2 iputils-ping ethtool tcpdump iperf3 nftables mininet bridge-utils procps python3-venv python3-pip nmap p0f
              gcc python3-dev)

if [ "$(id -u)" -ne 0 ]; then
  echo "toelab set-up needs root (it installs apt packages and builds namespaces): run it as root." >&2
  exit 2
fi

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "toelab: installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp="$venv/.toelab-installed"
want="$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "toelab: building the virtual environment in $venv"
  [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install -q -e "$here[native]"
  # optional: `toelab fuzz --guided` (coverage-guided); left out where it does not install cleanly
  "$venv/bin/python" -m pip install -q "atheris>=2.3" >/dev/null 2>&1 || echo "toelab: atheris did not install; toelab fuzz --guided is unavailable"
  echo "$want" > "$stamp"
fi

# The compiled engine: never fatal; without it toelab runs the same engine as pure Python.
if [ "${TOELAB_PURE_PYTHON:-0}" = 0 ]; then
  "$venv/bin/python" "$here/scripts/build_native.py" || true
fi
