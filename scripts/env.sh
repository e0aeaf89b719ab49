# Sourced by demo.sh and ui.sh: the state directory and the demo scoring config they share.
export FBE_HOME="${FBE_HOME:-$PWD/var}"
# The sample days are short; the demo lowers the trigger from SPEC §8's 70 to 30 so every
# instrument trades (see README). Set FBE_SCORING_CONFIG='{}' for the SPEC §8 defaults.
if [ -z "${FBE_SCORING_CONFIG+set}" ]; then
  export FBE_SCORING_CONFIG='{"trigger_score": 30}'
fi
