import pytest

from tether_operator.k8s.naming import run_id_for, run_object


def test_run_ids_round_trip_names_with_dots() -> None:
    assert run_object(run_id_for("team-a", "nightly.v2-x7k2p")) == ("team-a", "nightly.v2-x7k2p")


@pytest.mark.parametrize("bad", ["plain", ".name", "ns."])
def test_a_run_id_without_namespace_and_name_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="does not name a WorkflowRun"):
        run_object(bad)
