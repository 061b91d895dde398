"""Quick runs of the rest of the paper's toy experiments: `polytopes` finds the shapes the paper
shows for uniform superposition; `adversarial` finds vulnerability rising with superposition."""


def test_quick_polytopes_run_finds_the_papers_shapes(run_quick):
    out, s = run_quick("polytopes")
    names3 = [r["geometry"] for r in s["setting_3d"]["instances"]]
    names2 = [r["geometry"] for r in s["setting_2d"]["instances"]]
    assert names3[-1] == "square antiprism" and "octahedron" in names3  # 8 features in 3-D, sparse end
    assert "pentagon" in names2 and set(names2[-3:]) <= {"pentagon", "hexagon"}  # sparse: polygons
    assert (out / "directions_3d.html").is_file() and (out / "norms_3d.png").is_file()


def test_quick_adversarial_run_finds_vulnerability_rising_with_superposition(run_quick):
    out, s = run_quick("adversarial")
    per_dim = [r["features_per_dimension"] for r in s["instances"]]
    assert per_dim[0] < 1.2 and per_dim[-1] > 2.5  # dense: dedicated dimensions; sparse: superposition
    assert s["rises_with_superposition"]  # every superposed model, every ε, above the dense one
    # the most superposed model (measured 1.99-2.11x the dense one's vulnerability)
    assert all(v[-1] > 1.5 for v in s["relative_to_least_superposed"].values())
    for row in s["epsilons"]:  # the attack beats random perturbations of the same norm everywhere
        assert all(a > 2 * r for a, r in zip(row["adversarial"], row["random"]))
    assert (out / "vulnerability.png").is_file()


def test_quick_nonuniform_locates_its_transitions(run_quick):
    """(a) feature 0 unrepresented at low importance, a pentagon in the middle, deformed at high;
    (b) sparse correlated pairs become orthogonal, dense triples collapse."""
    out, s = run_quick("nonuniform")
    names = s["one_feature"]["names"]
    assert "pentagon" in names and names[0] != "pentagon" and names[-1] != "pentagon"
    assert len(s["one_feature"]["transitions"]) >= 2
    pairs, triples = s["correlated_pairs"], s["correlated_triples"]
    assert all(abs(m) < 0.1 for m in pairs["mean_within_cosine"][1:]) and pairs["orthogonal_from"] is not None
    assert triples["mean_within_cosine"][-1] > 0.95 and triples["collapse_between"] is not None
    assert (out / "pair_cosines.png").is_file()
