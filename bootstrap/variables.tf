variable "region" {
  description = "AWS region of the bootstrap/coordinator node."
  type        = string
  default     = "eu-central-1"
}

variable "name" {
  description = "Name of this node: tags, the security group and the IAM role are named after it (one per node, e.g. quackmesh-boot-1)."
  type        = string
  default     = "quackmesh-boot-1"
}

variable "instance_type" {
  description = "EC2 instance type. c7i.large (2 vCPU, 4 GiB) runs a bootstrap node that also coordinates MLP/CNN MNIST jobs; t3.small is enough for a bootstrap-only node (coordinator = false). See docs/aws.md."
  type        = string
  default     = "c7i.large"
}

variable "subnet_id" {
  description = "Subnet (public, with a route to an internet gateway) for the instance. Empty: the default VPC's default subnet in the first availability zone."
  type        = string
  default     = ""
}

variable "data_volume_gb" {
  description = "Size of the persistent EBS data volume (the node's identity key, keystore, redb store and blobs) in GiB."
  type        = number
  default     = 50

  validation {
    condition     = var.data_volume_gb >= 8
    error_message = "data_volume_gb must be at least 8."
  }
}

variable "root_volume_gb" {
  description = "Size of the root volume in GiB (OS and binary only)."
  type        = number
  default     = 16
}

variable "release_url" {
  description = "HTTPS URL of the quackmesh binary (linux x86_64, built on Debian 12 with `cargo build --release`), e.g. a GitHub release asset."
  type        = string

  validation {
    condition     = startswith(var.release_url, "https://")
    error_message = "release_url must be an https:// URL."
  }
}

variable "release_sha256" {
  description = "SHA-256 of the binary at release_url (`sha256sum target/release/quackmesh`); cloud-init refuses a binary that does not match."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.release_sha256))
    error_message = "release_sha256 must be 64 lowercase hex digits."
  }
}

variable "network" {
  description = "Chain network of the node: duckchain-testnet (chain id 202105) or duckchain-mainnet (5545)."
  type        = string
  default     = "duckchain-testnet"

  validation {
    condition     = contains(["duckchain-testnet", "duckchain-mainnet"], var.network)
    error_message = "network must be duckchain-testnet or duckchain-mainnet."
  }
}

variable "rpc_url" {
  description = "Chain RPC endpoint. Empty: the network's default from testnet/networks.toml (https://testnet-rpc.duckchain.io, https://rpc.duckchain.io)."
  type        = string
  default     = ""
}

variable "deployment_file" {
  description = "Deployment record of the contracts, written by scripts/deploy-testnet.sh. Empty: ../testnet/deployments/<network>.json."
  type        = string
  default     = ""
}

variable "coordinator" {
  description = "Run the node coordinator-eligible (--coordinator): it registers and stakes on chain and stands for election. false: a bootstrap-only node without a chain key."
  type        = bool
  default     = true
}

variable "p2p_port" {
  description = "libp2p port, opened to the world for TCP and for QUIC (UDP)."
  type        = number
  default     = 4001
}

variable "api_port" {
  description = "Port of the node's HTTP API and dashboard."
  type        = number
  default     = 7720
}

variable "api_allowed_cidrs" {
  description = "CIDRs allowed to reach the HTTP API (the dashboard, /metrics, and POST endpoints that spend the node's $DUCK: keep it to operators). Empty: the API listens on 127.0.0.1 only (reach it through SSM port forwarding)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.api_allowed_cidrs : can(cidrnetmask(c)) || can(cidrhost(c, 0))])
    error_message = "api_allowed_cidrs must hold CIDR blocks such as 198.51.100.7/32."
  }
}

variable "bootstrap_peers" {
  description = "Extra bootstrap multiaddrs (/ip4/.../tcp/4001/p2p/12D3...) besides those listed in peers/<network>.toml."
  type        = list(string)
  default     = []
}

variable "keystore_password_parameter" {
  description = "Name of an SSM Parameter Store SecureString holding the keystore password (created by you, never by Terraform, so it stays out of the state). Needed when coordinator = true."
  type        = string
  default     = "/quackmesh/keystore-password"

  validation {
    condition     = startswith(var.keystore_password_parameter, "/")
    error_message = "keystore_password_parameter must be a path such as /quackmesh/keystore-password."
  }
}

variable "log_filter" {
  description = "The node's log filter (QUACKMESH_LOG)."
  type        = string
  default     = "info"
}
