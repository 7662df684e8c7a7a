output "public_ip" {
  description = "The node's Elastic IP."
  value       = aws_eip.node.public_ip
}

output "instance_id" {
  description = "EC2 instance id (for `aws ssm start-session --target`)."
  value       = aws_instance.node.id
}

output "data_volume_id" {
  description = "The persistent EBS data volume (identity, keystore, store)."
  value       = aws_ebs_volume.data.id
}

output "multiaddr_tcp" {
  description = "The node's TCP multiaddr without its PeerId; append /p2p/<peer_id> (see README.md: Verify) and add it to peers/<network>.toml."
  value       = "/ip4/${aws_eip.node.public_ip}/tcp/${var.p2p_port}"
}

output "multiaddr_quic" {
  description = "The node's QUIC multiaddr without its PeerId."
  value       = "/ip4/${aws_eip.node.public_ip}/udp/${var.p2p_port}/quic-v1"
}

output "api_url" {
  description = "The HTTP API and dashboard (reachable from api_allowed_cidrs only; otherwise through SSM port forwarding to 127.0.0.1)."
  value       = length(var.api_allowed_cidrs) > 0 ? "http://${aws_eip.node.public_ip}:${var.api_port}/" : "ssm port forwarding to 127.0.0.1:${var.api_port}"
}

output "node_config" {
  description = "The node.toml written to /etc/quackmesh/node.toml."
  value       = local.node_toml
}
