# Stronghold operator image: build wheels in one stage, install into a slim runtime.
#
#   docker build -t stronghold/operator:0.1.0 .                      # from PyPI
#   make image   # offline: wheels built on the host, base image made from Debian packages
#
# The backup/restore Jobs do not run in this image: they use a PostgreSQL client image
# (spec.jobTemplate.image; the local cluster uses stronghold/base:bookworm), so the operator
# image stays small and its pg_dump version is not tied to the operator's release.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# EXTRAS=capacity: the image of the capacity-report CronJob (numpy, matplotlib; from PyPI):
#   docker build --build-arg EXTRAS=capacity -t stronghold/operator:0.1.0-capacity .
ARG EXTRAS=""
USER root
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY . /src
# With a wheelhouse in build/wheels (make image) the build needs no network at all.
RUN python3 -m venv /opt/stronghold \
 && if [ -d build/wheels ] && ls build/wheels/stronghold_operator-*.whl >/dev/null 2>&1; then \
      /opt/stronghold/bin/pip install --no-index --find-links build/wheels \
        -c requirements.lock stronghold-operator; \
    else \
      /opt/stronghold/bin/pip install -c requirements.lock "/src${EXTRAS:+[$EXTRAS]}"; \
    fi \
 && /opt/stronghold/bin/pip uninstall -y pip \
 && find /opt/stronghold -name '__pycache__' -prune -exec rm -rf {} +

FROM ${BASE_IMAGE}
COPY --from=build /opt/stronghold /opt/stronghold
# USER/HOME: the uid has no /etc/passwd entry (any uid works, e.g. OpenShift's random ones),
# and kopf asks getpass.getuser() for its identity, which reads $USER first.
ENV PATH=/opt/stronghold/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    USER=stronghold \
    HOME=/tmp
# Non-root; the Deployment also sets runAsNonRoot and a read-only root filesystem.
USER 10001:10001
EXPOSE 8080 9090
# Exec form: no shell is involved at runtime.
ENTRYPOINT ["/opt/stronghold/bin/stronghold"]
CMD ["run", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=9090", "--log-format=json"]
