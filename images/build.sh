#!/usr/bin/env bash
# `make images`: build and tag the runtime, trainer and Spark images. Tag = the package version
# (src/batchrl/__init__.py), registry = $BATCHRL_IMAGE_REGISTRY (default ghcr.io/batchrl), so the
# tags match what the compiled pipeline and the SparkApplications name. Needs a Docker engine.
#   bash images/build.sh [runtime|trainer|spark ...]     (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."

registry="${BATCHRL_IMAGE_REGISTRY:-ghcr.io/batchrl}"
version="$(sed -n 's/^__version__ = "\([^"]*\)"$/\1/p' src/batchrl/__init__.py)"
if [[ -z "${version}" ]]; then
  echo "images/build.sh: cannot read __version__ from src/batchrl/__init__.py" >&2
  exit 1
fi
images=("$@")
if [[ ${#images[@]} -eq 0 ]]; then
  images=(runtime trainer spark)
fi
for name in "${images[@]}"; do
  if [[ ! -f "images/${name}/Dockerfile" ]]; then
    echo "images/build.sh: unknown image '${name}' (choose from runtime, trainer, spark)" >&2
    exit 2
  fi
done

if ! command -v docker >/dev/null 2>&1; then
  echo "make images needs a Docker engine: the 'docker' command is not installed." >&2
  echo "Install Docker (or run this on a machine/CI runner that has one); nothing was built." >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "make images needs a running Docker engine: 'docker info' cannot reach one." >&2
  echo "Start the Docker daemon (or point DOCKER_HOST at one) and rerun; nothing was built." >&2
  exit 1
fi

export DOCKER_BUILDKIT=1  # reads images/<name>/Dockerfile.dockerignore
for name in "${images[@]}"; do
  tag="${registry}/batchrl-${name}:${version}"
  echo "building ${tag}"
  docker build --file "images/${name}/Dockerfile" --tag "${tag}" .
done
echo "built: $(printf "${registry}/batchrl-%s:${version} " "${images[@]}")"
