#!/usr/bin/env bash
# Install everything sswe-node and its tests need: Debian packages and a Python virtual environment.
# Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(dcmtk dicom3tools orthanc orthanc-dicomweb postgresql tesseract-ocr tesseract-ocr-eng)
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.sswe-node-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "setup: installing Python packages into .venv (versions from constraints.txt)"
  .venv/bin/python -m pip install -q --upgrade pip
  # One TensorFlow distribution: an environment made before pyproject.toml asked for
  # `tensorflow` may hold `tensorflow-cpu`, which installs the same files; never keep both.
  if .venv/bin/python -m pip show -q tensorflow-cpu >/dev/null 2>&1 \
    && ! .venv/bin/python -m pip show -q tensorflow >/dev/null 2>&1; then
    .venv/bin/python -m pip uninstall -q -y tensorflow-cpu
  fi
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[training,postgres,test]"
  touch "$stamp"
fi

# pynetdicom installs its own echoscu/storescu/findscu/... scripts into .venv/bin, which would
# shadow dcmtk's (in /usr/bin) whenever the environment is activated: `storescu -R` would then
# fail with "unrecognized arguments". They stay available as `python -m pynetdicom storescu`.
for tool in echoscu echoscp storescu storescp findscu getscu movescu; do
  script=.venv/bin/$tool
  if [ -f "$script" ] && grep -q pynetdicom "$script"; then
    rm -f "$script"
  fi
done
