"""The trained model out, and back in (docs/models_out.md).

save.py     what a run writes beside results.json (model, predictions) and how it is reloaded
predict.py  ``python -m gradft.trained.predict <run_dir> --input <file>``: a saved run on new examples
"""
