"""efflab.report"""
