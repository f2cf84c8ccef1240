"""bbbctl: the operator's CLI for the bbbfleet CloudFormation stack."""
