# One QuackMesh bootstrap node on EC2, coordinator-eligible by default: a Debian 12 instance with
# a stable public address (Elastic IP), the node as a systemd service (quackmesh.service) whose
# data dir (libp2p identity, keystore, redb store, blobs) lives on a separate encrypted EBS
# volume that outlives the instance, a security group that opens only the libp2p port (TCP and
# QUIC) to the world and the API port to var.api_allowed_cidrs, and an instance role that can
# read the keystore password from SSM Parameter Store and be reached with SSM Session Manager
# (no SSH). See README.md beside this file.

data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}

# Debian 12 (bookworm), the distribution the release binary is built on (same glibc).
data "aws_ami" "debian" {
  most_recent = true
  owners      = ["136693071363"] # Debian's official cloud images

  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

data "aws_vpc" "default" {
  count   = var.subnet_id == "" ? 1 : 0
  default = true
}

data "aws_subnets" "default" {
  count = var.subnet_id == "" ? 1 : 0

  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default[0].id]
  }

  filter {
    name   = "default-for-az"
    values = ["true"]
  }
}

data "aws_subnet" "selected" {
  id = var.subnet_id != "" ? var.subnet_id : sort(data.aws_subnets.default[0].ids)[0]
}

locals {
  data_dir        = "/var/lib/quackmesh"
  deployment_file = var.deployment_file != "" ? var.deployment_file : "${path.module}/../testnet/deployments/${var.network}.json"

  # Public bootstrap peers of the network, from peers/<network>.toml (the quoted multiaddrs).
  listed_peers    = [for m in regexall("\"(/(?:ip4|ip6|dns|dns4|dns6)/[^\"]+)\"", file("${path.module}/peers/${var.network}.toml")) : m[0]]
  bootstrap_peers = distinct(concat(local.listed_peers, var.bootstrap_peers))

  api_listen = length(var.api_allowed_cidrs) > 0 ? "0.0.0.0:${var.api_port}" : "127.0.0.1:${var.api_port}"

  # The node's settings (`quackmesh node --config`); keys are the node's flag names.
  node_toml = join("\n", compact([
    "# Written by Terraform (bootstrap/main.tf); changes here are lost on the next apply.",
    "data_dir = \"${local.data_dir}\"",
    "listen = ${jsonencode(["/ip4/0.0.0.0/tcp/${var.p2p_port}", "/ip4/0.0.0.0/udp/${var.p2p_port}/quic-v1"])}",
    "bootstrap = ${jsonencode(local.bootstrap_peers)}",
    # The Elastic IP (allocated before the instance): what peers are told to dial.
    "announce = \"/ip4/${aws_eip.node.public_ip}/tcp/${var.p2p_port}\"",
    "api = \"${local.api_listen}\"",
    "mdns = false",
    var.coordinator ? "coordinator = true" : "",
    var.coordinator ? "network = \"${var.network}\"" : "",
    var.coordinator && var.rpc_url != "" ? "rpc_url = \"${var.rpc_url}\"" : "",
    var.coordinator ? "deployment = \"/etc/quackmesh/deployment.json\"" : "",
    var.coordinator ? "keystore = \"${local.data_dir}/keystore.json\"" : "",
    "",
  ]))

  # Non-secret settings of the helper scripts (the password itself stays in SSM).
  node_env = join("\n", [
    "QMBOOT_REGION=${var.region}",
    "QMBOOT_KEYSTORE_PARAMETER=${var.keystore_password_parameter}",
    "QMBOOT_NEEDS_KEY=${var.coordinator ? 1 : 0}",
    "QUACKMESH_LOG=${var.log_filter}",
    "",
  ])
}

resource "aws_security_group" "node" {
  name        = var.name
  description = "QuackMesh node ${var.name}: libp2p to the world, API to operators"
  vpc_id      = data.aws_subnet.selected.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "p2p_tcp_v4" {
  security_group_id = aws_security_group.node.id
  description       = "libp2p TCP"
  ip_protocol       = "tcp"
  from_port         = var.p2p_port
  to_port           = var.p2p_port
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "p2p_quic_v4" {
  security_group_id = aws_security_group.node.id
  description       = "libp2p QUIC"
  ip_protocol       = "udp"
  from_port         = var.p2p_port
  to_port           = var.p2p_port
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "p2p_tcp_v6" {
  security_group_id = aws_security_group.node.id
  description       = "libp2p TCP (IPv6)"
  ip_protocol       = "tcp"
  from_port         = var.p2p_port
  to_port           = var.p2p_port
  cidr_ipv6         = "::/0"
}

resource "aws_vpc_security_group_ingress_rule" "p2p_quic_v6" {
  security_group_id = aws_security_group.node.id
  description       = "libp2p QUIC (IPv6)"
  ip_protocol       = "udp"
  from_port         = var.p2p_port
  to_port           = var.p2p_port
  cidr_ipv6         = "::/0"
}

resource "aws_vpc_security_group_ingress_rule" "api" {
  for_each = toset(var.api_allowed_cidrs)

  security_group_id = aws_security_group.node.id
  description       = "QuackMesh HTTP API and dashboard"
  ip_protocol       = "tcp"
  from_port         = var.api_port
  to_port           = var.api_port
  cidr_ipv4         = strcontains(each.value, ":") ? null : each.value
  cidr_ipv6         = strcontains(each.value, ":") ? each.value : null
}

# Outbound: the chain's RPC (HTTPS), the release download, apt, SSM, and dialling peers.
resource "aws_vpc_security_group_egress_rule" "all_v4" {
  security_group_id = aws_security_group.node.id
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "all_v6" {
  security_group_id = aws_security_group.node.id
  ip_protocol       = "-1"
  cidr_ipv6         = "::/0"
}

# Instance role: SSM Session Manager (shell and port forwarding without SSH) and reading the
# keystore password parameter.
resource "aws_iam_role" "node" {
  name = var.name
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Action    = "sts:AssumeRole"
      Principal = { Service = "ec2.amazonaws.com" }
    }]
  })
}

resource "aws_iam_role_policy_attachment" "ssm_core" {
  role       = aws_iam_role.node.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_role_policy" "keystore_password" {
  name = "${var.name}-keystore-password"
  role = aws_iam_role.node.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["ssm:GetParameter"]
      Resource = "arn:${data.aws_partition.current.partition}:ssm:${var.region}:${data.aws_caller_identity.current.account_id}:parameter${var.keystore_password_parameter}"
    }]
  })
}

resource "aws_iam_instance_profile" "node" {
  name = var.name
  role = aws_iam_role.node.name
}

# The data dir: identity.key (the PeerId other nodes bootstrap from), keystore.json (the
# coordinator's staked chain key), the redb store and blobs. It outlives the instance; replacing
# the instance (a new release_url, a new instance_type) keeps the PeerId and the key.
resource "aws_ebs_volume" "data" {
  availability_zone = data.aws_subnet.selected.availability_zone
  size              = var.data_volume_gb
  type              = "gp3"
  encrypted         = true

  tags = {
    Name = "${var.name}-data"
  }

  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_instance" "node" {
  ami                    = data.aws_ami.debian.id
  instance_type          = var.instance_type
  subnet_id              = data.aws_subnet.selected.id
  vpc_security_group_ids = [aws_security_group.node.id]
  iam_instance_profile   = aws_iam_instance_profile.node.name

  metadata_options {
    http_tokens   = "required" # IMDSv2 only
    http_endpoint = "enabled"
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = var.root_volume_gb
    encrypted   = true
  }

  user_data_replace_on_change = true
  user_data = templatefile("${path.module}/cloud-init.yaml", {
    release_url      = var.release_url
    release_sha256   = var.release_sha256
    data_dir         = local.data_dir
    volume_id        = aws_ebs_volume.data.id
    needs_deployment = var.coordinator
    service_b64      = filebase64("${path.module}/quackmesh.service")
    prestart_b64     = filebase64("${path.module}/scripts/prestart.sh")
    start_b64        = filebase64("${path.module}/scripts/start.sh")
    mount_b64        = filebase64("${path.module}/scripts/mount-data.sh")
    install_b64      = filebase64("${path.module}/scripts/install-binary.sh")
    node_toml_b64    = base64encode(local.node_toml)
    node_env_b64     = base64encode(local.node_env)
    deployment_b64   = var.coordinator && fileexists(local.deployment_file) ? filebase64(local.deployment_file) : ""
  })

  lifecycle {
    precondition {
      condition     = !var.coordinator || fileexists(local.deployment_file)
      error_message = "A coordinator needs the contracts' deployment record: run scripts/deploy-testnet.sh first (it writes testnet/deployments/<network>.json) or set deployment_file."
    }
  }

  tags = {
    Name = var.name
  }
}

resource "aws_volume_attachment" "data" {
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.data.id
  instance_id = aws_instance.node.id

  # Stop the node (and unmount) before the volume is detached on replacement.
  stop_instance_before_detaching = true
}

# A stable public address: the multiaddr in peers/<network>.toml survives instance replacement.
resource "aws_eip" "node" {
  domain = "vpc"

  tags = {
    Name = var.name
  }
}

resource "aws_eip_association" "node" {
  instance_id   = aws_instance.node.id
  allocation_id = aws_eip.node.id
}
