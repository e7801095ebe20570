"""The attacks' names and groups, without TensorFlow: what `run_attacks` and the CLI's ``--attacks`` accept.

>>> ATTACK_GROUPS["rmia"], ATTACK_LIST
(('rmia_online', 'rmia_offline'), 'all, threshold, learned, lira, rmia')
"""

THRESHOLD_ATTACK_NAMES = ("gap", "loss", "confidence", "true_class_confidence", "entropy", "modified_entropy")
LEARNED_ATTACK_NAMES = ("shokri", "top3")
LIRA_ATTACK_NAMES = ("lira_online", "lira_offline")
RMIA_ATTACK_NAMES = ("rmia_online", "rmia_offline")
#: every attack `run_attacks` knows, in report order
ATTACK_NAMES = (*THRESHOLD_ATTACK_NAMES, *LEARNED_ATTACK_NAMES, *LIRA_ATTACK_NAMES, *RMIA_ATTACK_NAMES)
#: attacks that cannot run without shadow models
SHADOW_ONLY_ATTACKS = (*LEARNED_ATTACK_NAMES, *LIRA_ATTACK_NAMES, *RMIA_ATTACK_NAMES)
ATTACK_GROUPS = {
    "all": ATTACK_NAMES,
    "threshold": THRESHOLD_ATTACK_NAMES,
    "learned": LEARNED_ATTACK_NAMES,
    "lira": LIRA_ATTACK_NAMES,
    "rmia": RMIA_ATTACK_NAMES,
}
#: the groups, for help texts
ATTACK_LIST = ", ".join(ATTACK_GROUPS)
