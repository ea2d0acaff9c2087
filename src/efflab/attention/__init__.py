"""efflab.attention"""
