# twinseal default attestation and key-release policy.
#
# input.claims   : twinseal_attest::VerifiedClaims (serialized)
# input.request  : { key_id?: string, insecure_allow_simulated_tee: bool }
# data.twinseal.config    : accepted_tcb_statuses, allowed_measurements, keys
# data.twinseal.placement : platform reference -> location (from verified,
#                           operator-signed placement endorsements)
#
# The decision is `allow` when `deny` is empty; every deny message is a reason.
package twinseal.policy

import rego.v1

claims := input.claims

request := input.request

config := data.twinseal.config

deny contains "simulated TEE evidence is not accepted" if {
	claims.simulated
	not request.insecure_allow_simulated_tee
}

deny contains "debug-mode TEE: its memory is readable by the host" if {
	claims.debug
}

deny contains msg if {
	not claims.tcb_status in config.accepted_tcb_statuses
	msg := sprintf("TCB status %s is not accepted", [claims.tcb_status])
}

# A measurement is allowed when it is on the list, or (SGX) when the
# enclave's signer (MRSIGNER) is on the signer list.
measurement_allowed if claims.measurement in config.allowed_measurements

measurement_allowed if claims.measurements.mr_signer in object.get(config, "allowed_signers", [])

deny contains msg if {
	not measurement_allowed
	msg := sprintf("measurement %s is not on the allow-list", [claims.measurement])
}

# The platform's location: from the most specific of its references that has
# a placement endorsement (chip id / PPID before FMSPC).
endorsed := [loc | some ref in claims.platform_references; loc := data.twinseal.placement[ref]]

location := endorsed[0]

deny contains msg if {
	request.key_id
	not config.keys[request.key_id]
	msg := sprintf("unknown key %s", [request.key_id])
}

# A key whose rule lists no locations may be released anywhere; a key that
# lists locations needs an endorsed platform in one of them.
deny contains msg if {
	rule := config.keys[request.key_id]
	count(rule.allowed_locations) > 0
	count(endorsed) == 0
	msg := sprintf("platform has no placement endorsement, which key %s requires", [request.key_id])
}

deny contains msg if {
	rule := config.keys[request.key_id]
	count(rule.allowed_locations) > 0
	not location in rule.allowed_locations
	msg := sprintf("location %s is not allowed for key %s", [location, request.key_id])
}

allow if {
	count(deny) == 0
}
