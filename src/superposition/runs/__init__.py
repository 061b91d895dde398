"""Orchestration of whole runs: the layer the CLI calls, above models, training, figures and
reports.

    train_sae.py  `train-sae` and `eval-sae`: a language-model SAE run, its log, summary and report
    dashboard.py  `dashboard`: gather what each latent of a run means, then render the site
    analyze.py    `analyze`: the latents behind one prompt's next token
    compare.py    `compare-saes`: feature splitting between two SAEs of different widths
    meta_sae.py   `meta-sae`: a meta-SAE on an SAE's decoder rows
    resolve.py    which SAE a command was pointed at (experiment runs, train-sae runs, any SAE)

Experiments (`superposition run`) sit beside this layer in `superposition.experiments`.
"""
