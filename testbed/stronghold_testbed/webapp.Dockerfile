# The demo web tier (stronghold_testbed.webapp): its own image, so the operator image ships
# no demo code and no pymemcache. Built offline by the testbed from a host wheelhouse.
ARG BASE_IMAGE=stronghold/base:bookworm

FROM ${BASE_IMAGE} AS build
USER root
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY wheels /wheels
# Only the web app's own dependencies, not the testbed's (Docker, YAML, aiohttp, ...).
RUN python3 -m venv /opt/webapp \
 && /opt/webapp/bin/pip install --no-index --find-links /wheels --no-deps stronghold-testbed \
 && /opt/webapp/bin/pip install --no-index --find-links /wheels 'psycopg[binary]' pika pymemcache \
 && /opt/webapp/bin/pip uninstall -y pip \
 && find /opt/webapp -name '__pycache__' -prune -exec rm -rf {} +

FROM ${BASE_IMAGE}
COPY --from=build /opt/webapp /opt/webapp
ENV PATH=/opt/webapp/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["/opt/webapp/bin/python", "-m", "stronghold_testbed.webapp"]
