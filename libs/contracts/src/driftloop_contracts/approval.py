"""Names of the retraining DAG's human approval step, shared by the DAG and the CLI.

With the DAG param ``approval=manual`` the task :data:`APPROVAL_TASK_ID` waits for a person
(Airflow's human-in-the-loop, docs/retraining.md "Approval") who answers one of
:data:`APPROVAL_OPTIONS`; no answer within ``approval_timeout_minutes`` counts as
:data:`REJECT`. The CLI's ``driftloop loop approve|reject`` sends exactly these strings.
"""

from typing import Final, Literal

APPROVAL_TASK_ID: Final = "approval"
APPROVE: Final = "Approve"
REJECT: Final = "Reject"
APPROVAL_OPTIONS: Final = (APPROVE, REJECT)
#: The task is not mapped: Airflow addresses it with map index -1.
APPROVAL_MAP_INDEX: Final = -1

ApprovalMode = Literal["auto", "manual"]
APPROVAL_MODES: Final[tuple[ApprovalMode, ...]] = ("auto", "manual")
DEFAULT_APPROVAL_TIMEOUT_MINUTES: Final = 60.0
