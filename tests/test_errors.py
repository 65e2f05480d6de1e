"""_errors: one-line messages, key lists cut with a count, near matches for names."""

from __future__ import annotations

from scclust._errors import choices, did_you_mean, near_matches

HUMAN = ["MIR1302-10", "FAM138A", "OR4F5", "CD3E", "CD3D", "CD4", "CD8A", "CD14", "MS4A1", "MS4A7", "HLA-DRA", "FCGR3A"]


def test_choices_cuts_long_lists_with_a_count():
    assert choices([f"k{i}" for i in range(20)]) == "'k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7', ... (12 more)"
    assert choices(["a"]) == "'a'" and choices([]) == "(none)"


def test_near_matches_case_first_then_close_spellings():
    found = near_matches(["Cd3e", "cd8a", "CD8", "hla.dra", "FCGR3", "CD4"], HUMAN)
    # CD4 is in the data: nothing to suggest; CD3E, not the first genes of the file
    assert found == {"Cd3e": "CD3E", "cd8a": "CD8A", "CD8": "CD8A", "hla.dra": "HLA-DRA", "FCGR3": "FCGR3A"}


def test_near_matches_do_not_swap_gene_family_members():
    # one letter or number from a present gene is another gene, not a typo
    assert near_matches(["CD3F", "CD41", "MS4A2", "NOTAGENE"], ["CD3E", "CD4", "MS4A1", "CD14"]) == {}


def test_did_you_mean_names_the_species_when_only_case_differs():
    msg = did_you_mean(["Cd3e", "Cd4", "Cd8a"], HUMAN)
    assert msg == (
        "gene names look like mouse symbols (Cd3e) while the data's are human (CD3E); "
        "did you mean 'CD3E' for 'Cd3e', 'CD4' for 'Cd4', 'CD8A' for 'Cd8a'?"
    )
    mouse = [g.capitalize() for g in HUMAN]
    assert did_you_mean(["CD3E", "CD4"], mouse).startswith(
        "gene names look like human symbols (CD3E) while the data's are mouse (Cd3e); "
    )
    assert did_you_mean(["Cd3e", "cd8a"], HUMAN).startswith(
        "gene names differ from the data's in case only (Cd3e vs CD3E)"
    )
    assert did_you_mean(["CD8", "NOTAGENE1", "NOTAGENE2"], HUMAN) == "did you mean 'CD8A' for 'CD8'?"
    assert did_you_mean(["NOTAGENE"], HUMAN) == ""


def test_did_you_mean_cuts_long_lists():
    genes = [f"GENE{i}" for i in range(12)]
    msg = did_you_mean([g.lower() for g in genes], genes)
    assert msg.endswith("'GENE7' for 'gene7', ... (4 more)?")
