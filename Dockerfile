# QuackMesh image: the quackmesh binary (release build) and anvil, for docker-compose.yml's local
# multi-node network. UNVERIFIED: written where no Docker engine runs (see README.md).
#
#   docker build -t quackmesh .
#   docker run --rm quackmesh quackmesh --help

# 1. Build the node (Debian 12, the same glibc as the EC2 release binary in bootstrap/).
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY node ./node
COPY contracts/abi ./contracts/abi
COPY testnet/networks.toml ./testnet/networks.toml
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin quackmesh \
    && install -m 0755 target/release/quackmesh /usr/local/bin/quackmesh

# 2. anvil from the npm package pinned in package-lock.json (what scripts/setup.sh installs).
FROM node:20-bookworm-slim AS tools
WORKDIR /tools
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error \
    && install -m 0755 node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil /usr/local/bin/anvil

# 3. Runtime: debian-slim with the two binaries and the compose entrypoint.
FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/quackmesh --shell /usr/sbin/nologin quackmesh \
    && mkdir -p /var/lib/quackmesh /shared \
    && chown quackmesh:quackmesh /var/lib/quackmesh /shared
COPY --from=builder /usr/local/bin/quackmesh /usr/local/bin/quackmesh
COPY --from=tools /usr/local/bin/anvil /usr/local/bin/anvil
COPY docker/entrypoint.sh /usr/local/bin/quackmesh-entrypoint
USER quackmesh
WORKDIR /var/lib/quackmesh
ENV QUACKMESH_LOG=info
EXPOSE 4001/tcp 4001/udp 7720/tcp
ENTRYPOINT ["quackmesh-entrypoint"]
CMD ["quackmesh", "--help"]
