"""Drawing only: attention overlays, overlay videos, plots over time, the offline HTML report.

Nothing here runs a model or computes a metric: inference (whole videos, sliding windows) lives in `istpan.engine`
(`predict`, `windows`, `explain`), localisation metrics in `istpan.evaluation.localization`, and what the model sees in
`istpan.data.preprocess.Preprocessing`. Modules (imported on use, so `import istpan.viz` stays cheap):
    overlay       heatmap colouring, frame grids                          overlay_heatmap, frame_grid
    video         MP4/GIF of a video with the attention overlaid          write_attention_video
    timeline      matplotlib plots: attention mass over time, per-class score timelines
    explain       the pictures of one explained video                     draw_explanation
    report        the static index.html                                   write_report
"""
