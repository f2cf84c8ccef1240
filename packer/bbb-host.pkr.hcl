# The BBB host image: Ubuntu 22.04, BigBlueButton 3.0, amazon-efs-utils, node
# exporter, Grafana Alloy, Scalelite's post-publish scripts and bbbnode in its own
# venv, with the units enabled. Nothing is left to fetch at boot.
#
#   packer build -var-file=my.pkrvars.hcl packer/

locals {
  # AMI names must be unique; the build time makes them so.
  stamp = formatdate("YYYYMMDD-hhmm", timestamp())
}

source "amazon-ebs" "bbb_host" {
  region        = var.region
  instance_type = var.instance_type
  ssh_username  = "ubuntu"
  ami_name      = "bbbfleet-bbb-${var.image_version}-${local.stamp}"
  encrypt_boot  = true

  source_ami_filter {
    filters = {
      name                = var.source_ami_name
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    # Canonical.
    owners      = ["099720109477"]
    most_recent = true
  }

  launch_block_device_mappings {
    device_name = "/dev/sda1"
    volume_size = 30
    volume_type = "gp3"
    # Packer 1.6 sends no gp3 defaults, and EC2 then refuses the volume.
    throughput            = 125
    iops                  = 3000
    delete_on_termination = true
  }

  tags = {
    Name                   = "bbbfleet-bbb-${var.image_version}"
    "bbbfleet:image"       = "bbb-host"
    "bbbfleet:version"     = var.image_version
    "bbbfleet:bbb-install" = var.bbb_install_commit
    "bbbfleet:scalelite"   = var.scalelite_version
    "bbbfleet:source-ami"  = "{{ .SourceAMI }}"
    "bbbfleet:source-name" = "{{ .SourceAMIName }}"
  }
}

build {
  sources = ["source.amazon-ebs.bbb_host"]

  # The file provisioner uploads into existing directories only.
  provisioner "shell" {
    inline = ["mkdir -p /tmp/bbbfleet/files"]
  }

  provisioner "file" {
    source      = var.bbbnode_wheel
    destination = "/tmp/bbbfleet/"
  }

  provisioner "file" {
    source      = "${path.root}/../requirements.lock"
    destination = "/tmp/bbbfleet/requirements.lock"
  }

  provisioner "file" {
    source      = "${path.root}/../systemd/bbbnode.service"
    destination = "/tmp/bbbfleet/bbbnode.service"
  }

  provisioner "file" {
    source      = "${path.root}/../systemd/bbbnode-host.service"
    destination = "/tmp/bbbfleet/bbbnode-host.service"
  }

  provisioner "file" {
    source      = "${path.root}/../systemd/bbbnode-host.socket"
    destination = "/tmp/bbbfleet/bbbnode-host.socket"
  }

  provisioner "file" {
    source      = "${path.root}/../helm/monitoring/alloy/bbb-host.alloy"
    destination = "/tmp/bbbfleet/config.alloy"
  }

  provisioner "file" {
    source      = "${path.root}/files/"
    destination = "/tmp/bbbfleet/files"
  }

  provisioner "shell" {
    execute_command = "sudo -E bash '{{ .Path }}'"
    environment_vars = [
      "BBB_INSTALL_COMMIT=${var.bbb_install_commit}",
      "BBB_INSTALL_SHA256=${var.bbb_install_sha256}",
      "BBB_INSTALL_ARGS=${var.bbb_install_args}",
      "SCALELITE_VERSION=${var.scalelite_version}",
      "SCALELITE_SHA256=${var.scalelite_sha256}",
      "EFS_UTILS_VERSION=${var.efs_utils_version}",
      "EFS_UTILS_SHA256=${var.efs_utils_sha256}",
      "ALLOY_VERSION=${var.alloy_version}",
      "ALLOY_SHA256=${var.alloy_sha256}",
    ]
    scripts = [
      "${path.root}/scripts/base.sh",
      "${path.root}/scripts/bbb.sh",
      "${path.root}/scripts/agents.sh",
      "${path.root}/scripts/scalelite-post-publish.sh",
      "${path.root}/scripts/bbbnode.sh",
      "${path.root}/scripts/cleanup.sh",
    ]
  }
}
