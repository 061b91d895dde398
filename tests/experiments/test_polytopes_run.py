"""The quick `polytopes` run finds the shapes the paper shows for uniform superposition."""


def test_quick_polytopes_run_finds_the_papers_shapes(run_quick):
    out, s = run_quick("polytopes")
    names3 = [r["geometry"] for r in s["setting_3d"]["instances"]]
    names2 = [r["geometry"] for r in s["setting_2d"]["instances"]]
    assert names3[-1] == "square antiprism" and "octahedron" in names3  # 8 features in 3-D, sparse end
    assert "pentagon" in names2 and set(names2[-3:]) <= {"pentagon", "hexagon"}  # sparse: polygons
    assert (out / "directions_3d.html").is_file() and (out / "norms_3d.png").is_file()
