# roomfeed: one image for the api, worker and trainer processes (docker-compose.yml picks the verb).
#
# LightFM 1.17 cannot build under pip>=25.3 (PEP 517 build isolation breaks its setup.py), so the
# build stage pins pip, installs numpy/scipy first and builds LightFM with --no-use-pep517 into a
# wheel; the runtime stage installs only wheels and carries no compiler.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN pip install "pip<25.3" setuptools wheel \
 && pip install numpy scipy \
 && pip wheel --no-deps --no-use-pep517 -w /wheels lightfm==1.17
WORKDIR /src
COPY . /src
RUN pip wheel --find-links /wheels -w /wheels /src

FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ROOMFEED_HOST=0.0.0.0 ROOMFEED_PORT=8000 ROOMFEED_DATA_DIR=/data
# libgomp1: LightFM's OpenMP runtime.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels roomfeed && rm -rf /wheels \
 && useradd --system --create-home --uid 10001 roomfeed \
 && mkdir -p /data && chown roomfeed /data
USER roomfeed
WORKDIR /home/roomfeed
# The feed's compiled viewer part (ranking/viewer_kernel.py, numba): compiled once here into a cache the
# processes read at start (~1 s) instead of compiling at each start (~10 s); a host with another CPU
# compiles again when the feed is built, before it serves.
ENV NUMBA_CACHE_DIR=/home/roomfeed/.numba
RUN python -c "from ranking import viewer_kernel; viewer_kernel.warm()"
VOLUME ["/data"]
EXPOSE 8000
CMD ["roomfeed", "serve"]
