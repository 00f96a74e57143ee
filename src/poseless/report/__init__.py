"""poseless.report"""
