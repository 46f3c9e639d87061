#!/usr/bin/env bash
# Installs everything moeopt needs to build and test: Debian -dev packages (apt-get) and the
# Python tools the tests compare against (pip, into .venv). Idempotent: re-running only
# installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_pkgs=(build-essential cmake ninja-build pkg-config git python3 python3-venv
  nlohmann-json3-dev libcpp-httplib-dev libcli11-dev libyaml-cpp-dev libspdlog-dev libfmt-dev
  libpcre2-dev libutf8proc-dev zlib1g-dev libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-dev)
# clang + libclang-rt-dev: the libFuzzer/ASan/UBSan build of scripts/fuzz.sh. The runtimes
# are in libclang-rt-<ver>-dev (meta package libclang-rt-dev) from Debian 12 and Ubuntu
# 23.04 on; older releases ship them in libclang-common-<ver>-dev, which clang pulls in.
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# python3/python3-venv may come from elsewhere (pyenv); only ask apt when none is usable.
if command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null; then
  missing=("${missing[@]/python3-venv}"); missing=("${missing[@]/python3}")
fi
read -ra missing <<<"${missing[*]:-}"
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  if [[ " ${missing[*]} " == *" libclang-rt-dev "* ]] && ! apt-cache show libclang-rt-dev >/dev/null 2>&1; then
    missing=("${missing[@]/libclang-rt-dev}"); read -ra missing <<<"${missing[*]}"
  fi
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python reference tools (HF tokenizers, jinja2, the openai client, ...), pinned.
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
req=scripts/requirements-test.txt
stamp=.venv/.requirements.sha
if [ "$(cat "$stamp" 2>/dev/null)" != "$(sha256sum "$req" | cut -d' ' -f1)" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$req"
  sha256sum "$req" | cut -d' ' -f1 >"$stamp"
fi
echo "setup: ok"
