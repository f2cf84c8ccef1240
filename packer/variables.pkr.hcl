# Inputs of the BBB host image. Everything fetched from outside a signed apt
# repository is pinned twice: by version (or commit) and by SHA-256, and the
# build stops when a download does not match. The checksums have no defaults:
# whoever builds the image reviews what it pins (example.pkrvars.hcl shows the
# shape).

variable "region" {
  type        = string
  default     = "eu-central-1"
  description = "Region to build the AMI in."
}

variable "instance_type" {
  type        = string
  default     = "c6i.xlarge"
  description = "Builder instance (BBB's installer wants 4 vCPUs and 8 GiB)."
}

variable "image_version" {
  type        = string
  default     = "dev"
  description = "Version tag of the image (e.g. the bbbfleet release)."
}

variable "source_ami_name" {
  type        = string
  default     = "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-*"
  description = "Canonical's Ubuntu 22.04 image name pattern; the newest match is used."
}

variable "bbb_install_commit" {
  type        = string
  description = "Commit of github.com/bigbluebutton/bbb-install whose bbb-install.sh installs BBB 3.0."
}

variable "bbb_install_sha256" {
  type        = string
  description = "SHA-256 of bbb-install.sh at that commit."
}

variable "bbb_install_args" {
  type        = string
  default     = "-v jammy-300-3.0.21"
  description = "Arguments of bbb-install.sh: one BBB 3.0 release (jammy-300-<release>, versions.yaml bbb; plain jammy-300 follows the newest); no hostname (set per host at boot by bbbnode)."
}

variable "scalelite_version" {
  type        = string
  description = "Scalelite release tag whose bigbluebutton/ post-publish scripts are installed (versions.yaml scalelite, e.g. v1.8.5)."
}

variable "scalelite_sha256" {
  type        = string
  description = "SHA-256 of Scalelite's source tarball of that tag."
}

variable "efs_utils_version" {
  type        = string
  description = "Release tag of github.com/aws/efs-utils (amazon-efs-utils)."
}

variable "efs_utils_sha256" {
  type        = string
  description = "SHA-256 of efs-utils' source tarball of that tag."
}

variable "alloy_version" {
  type        = string
  description = "Grafana Alloy release without the v (versions.yaml alloy, e.g. 1.21.2)."
}

variable "alloy_sha256" {
  type        = string
  description = "SHA-256 of alloy-linux-amd64.zip of that release (its SHA256SUMS)."
}

variable "bbbnode_wheel" {
  type        = string
  description = "The project's wheel (pip wheel --no-deps -w dist .), installed with requirements.lock as constraints."
}
