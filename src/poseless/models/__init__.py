"""poseless.models"""
