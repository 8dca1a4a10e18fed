"""Seeing what the model does: attention overlays, sliding-window inference on long videos, the offline HTML report.

Modules (imported on use, so `import istpan.viz` stays cheap):
    overlay       heatmap colouring, frame grids                          overlay_heatmap, frame_grid
    video         MP4/GIF of a video with the attention overlaid          write_attention_video
    timeline      matplotlib plots: attention mass over time, per-class score timelines
    localization  temporal IoU, Charades per-frame localisation mAP, pointing game
    synth_eval    those scores on the synthetic dataset's ground truth    evaluate_localization
    untrimmed     sliding windows over long videos, streamed              sliding_window_predict
    report        the static index.html                                   write_report
    explain       everything above for a list of videos                   explain_videos
"""
