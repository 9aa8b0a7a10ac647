"""What a trained classifier and its data show: evaluation (with test-time augmentation),
calibration, Grad-CAM, the report (`report.json`, `report.html` and the plots), the batch
view, and the dataset check with its image hashing and its search for mislabeled images
(`label_issues`, and `label_fixes` for the fixes fed back). A multi-label classifier's
measures, report and page, and the dataset check of multi-label data: `multi_label_metrics`,
`multi_label_report`, `multi_label_html` and `multi_label_check`.

matplotlib is imported only when a plot is drawn. The public functions are re-exported from
`tfresnet` (`tfresnet.evaluate`, `tfresnet.write_report`, `tfresnet.check_dataset`, ...).
"""
