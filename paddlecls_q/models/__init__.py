"""Paddle definitions of the PaddleClas backbones we test and demo with, and their export."""
