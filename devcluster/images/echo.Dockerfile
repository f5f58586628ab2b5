# The echo backend of the devcluster tests: stdlib Python on the debootstrap base, nothing else.
ARG BASE_IMAGE=localhost/svcscope-base:bookworm
FROM ${BASE_IMAGE}
WORKDIR /opt/echo
COPY app/ /opt/echo/app/
# Numeric, so that runAsNonRoot can be verified without an /etc/passwd entry.
USER 10001
# PYTHONPATH: `python3 -m app.echo` works whatever workingDir a pod spec sets.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/opt/echo
EXPOSE 8080/tcp 9000/tcp 9001/udp
CMD ["python3", "-m", "app.echo", "serve"]
